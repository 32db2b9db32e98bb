// Command gitopscheck tells what the GitOps tools that gate rollouts make of Kubernetes objects,
// using their own libraries rather than a re-implementation:
//
//   - kstatus: sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute, the library Flux (kustomize-controller
//     health checks, `wait: true`) and `kpt`/`kapply` use;
//   - Argo CD: a health.lua script run on gopher-lua the way Argo CD's controller runs a
//     resource.customizations.health script: a fresh state with only the package, base and table
//     libraries open (Argo CD adds its own restricted `os`; the Slot script needs none), the object
//     as the global `obj` (a Lua table), a one-second deadline, and the returned table's status
//     checked against Argo CD's health codes (anything else is Unknown).
//
// Usage: gitopscheck -health-lua FILE < objects.json
// Input: one object or a JSON array of objects. Output: a JSON array, one entry per object, in order:
// {"kstatus": {"status", "message"}, "argo": {"status", "message"}}.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

type result struct {
	Kstatus health `json:"kstatus"`
	Argo    health `json:"argo"`
}

// Argo CD's health codes (gitops-engine pkg/health); a script returning anything else reads Unknown.
var argoCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true, "Missing": true,
}

func main() {
	script := flag.String("health-lua", "", "the Argo CD health.lua script to run on each object")
	flag.Parse()
	if *script == "" {
		fail(errors.New("-health-lua is required"))
	}
	source, err := os.ReadFile(*script)
	if err != nil {
		fail(err)
	}
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail(err)
	}
	objects, err := decode(input)
	if err != nil {
		fail(err)
	}
	results := make([]result, 0, len(objects))
	for _, obj := range objects {
		kres, err := status.Compute(obj)
		if err != nil {
			fail(fmt.Errorf("kstatus: %w", err))
		}
		argo, err := argoHealth(obj.Object, string(source))
		if err != nil {
			fail(fmt.Errorf("health.lua: %w", err))
		}
		results = append(results, result{Kstatus: health{Status: kres.Status.String(), Message: kres.Message}, Argo: argo})
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", " ")
	if err := out.Encode(results); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "gitopscheck: %v\n", err)
	os.Exit(1)
}

// decode reads objects as the API machinery does (whole numbers become int64, as kstatus expects).
func decode(input []byte) ([]*unstructured.Unstructured, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal(input, &raws); err != nil {
		raws = []json.RawMessage{input}
	}
	objects := make([]*unstructured.Unstructured, 0, len(raws))
	for i, raw := range raws {
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("object %d: %w", i, err)
		}
		objects = append(objects, obj)
	}
	return objects, nil
}

func argoHealth(object map[string]interface{}, script string) (health, error) {
	state := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer state.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage,
		lua.BaseLibName: lua.OpenBase,
		lua.TabLibName:  lua.OpenTable,
	} {
		if err := state.CallByParam(lua.P{Fn: state.NewFunction(open), NRet: 0, Protect: true}, lua.LString(name)); err != nil {
			return health{}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	state.SetContext(ctx)
	state.SetGlobal("obj", toLua(state, object))
	if err := state.DoString(script); err != nil {
		return health{}, err
	}
	table, ok := state.Get(-1).(*lua.LTable)
	if !ok {
		return health{}, fmt.Errorf("the script returned %s, not a table", state.Get(-1).Type())
	}
	code, message := table.RawGetString("status"), table.RawGetString("message")
	if message.Type() != lua.LTNil && message.Type() != lua.LTString {
		return health{}, fmt.Errorf("message is a %s, not a string", message.Type())
	}
	if code.Type() != lua.LTString || !argoCodes[code.String()] {
		return health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
	}
	result := health{Status: code.String()}
	if message.Type() == lua.LTString {
		result.Message = message.String()
	}
	return result, nil
}

// toLua converts a decoded JSON value to Lua: objects and arrays become tables, numbers LNumber.
func toLua(state *lua.LState, value interface{}) lua.LValue {
	switch v := value.(type) {
	case nil:
		return lua.LNil
	case bool:
		return lua.LBool(v)
	case string:
		return lua.LString(v)
	case int64:
		return lua.LNumber(v)
	case float64:
		return lua.LNumber(v)
	case []interface{}:
		table := state.CreateTable(len(v), 0)
		for _, item := range v {
			table.Append(toLua(state, item))
		}
		return table
	case map[string]interface{}:
		table := state.CreateTable(0, len(v))
		for key, item := range v {
			table.RawSetString(key, toLua(state, item))
		}
		return table
	default:
		return lua.LNil
	}
}
