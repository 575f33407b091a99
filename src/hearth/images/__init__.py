"""Every image Hearth builds: runtime and builder container images, the `provided` base images, the AWS SDK layer
and the microVM guest image, from Debian's packages and cached by a hash of their recipe."""
