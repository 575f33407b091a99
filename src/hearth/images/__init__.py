"""Every image Hearth builds, from Debian's packages and cached by a hash of its recipe.

- `catalog`: the runtimes Hearth offers and what each is built from;
- `debian`: what every build shares (the host's apt sources and suite, mmdebstrap, host tools);
- `containers`: runtime and builder images for the Docker and gVisor backends;
- `provided`: the base images of custom runtimes;
- `aws_sdk`: the AWS SDK for JavaScript layer Node sandboxes see;
- `microvm`: the microVM guest (kernel, read-only root, initramfs);
- `locks`: one build of an image at a time on a host.

A layer below the engine: nothing here imports the engine, the scheduler or the API.
"""
