"""Developer tools that are not the local cluster: the image build (`make image`)."""
