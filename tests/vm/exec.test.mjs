// Exec and stat against the guest agent on a virtio-serial port (QEMU without vsock).
import { execSuite } from "./exec-suite.mjs";

execSuite({ channel: /virtio-serial\r?$/, env: { HYPEDECK_QEMU_VSOCK: "off" } });
