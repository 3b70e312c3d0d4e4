// Exec and stat against the guest agent on vsock: QEMU's vhost-user-vsock device served by
// vhost-device-vsock, reached through its hybrid-vsock socket (`CONNECT <port>`), the same
// host transport Cloud Hypervisor and the vz helper use. Needs vhost-device-vsock on PATH
// (`make deps-test` installs it). QEMU cannot migrate vhost-user-vsock, so no standby here.
import { execSuite } from "./exec-suite.mjs";

execSuite({ channel: /vsock cid \d+\r?$/, env: { HYPEDECK_QEMU_VSOCK: "vhost-user" }, standby: false });
