"""containerd-shim-rune-v2: containerd's runtime v2 shim (runtime type io.containerd.rune.v2) that drives rune for
every container and turns ordinary images into signed enclave containers at Create.

Modules, after containerd's runtime/v2/runc and pkg/process:
  manager    the `start` and `delete` subcommands (the launch contract); server: the long-lived process
  ttrpc      ttrpc framing, server and client; protobuf + api: the wire format and the messages
  service    the task service (dispatch and events); container: one container; process/: init and exec
  stdio/     null, FIFO/file (pipes), binary:// loggers, terminals (console)
  runtime    rune's command lines; reaper: the subreaper's SIGCHLD loop; events: publishing to containerd
  oom, stats TaskOOM and task metrics; rootfs: containerd's mounts on BUNDLE/rootfs; config: config.toml
  convert    the enclave conversion at Create (signing, the cache); signing_server: rune-signing-server

The plain-container path imports the standard library only, and little of it (_socket, _sha256, no grpcio or
protobuf runtime): the shim runs once per pod and its memory is counted per pod.
"""
