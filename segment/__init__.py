"""Local tooling: emulators, the local stack and the `segment` command."""
