// Benchmark (not a test): image pull + convert to a root disk. Hypedeck (`POST /images` until
// `ready`) against what a user would script otherwise: `skopeo copy` + `umoci unpack
// --rootless` + `mkfs.ext4 -d` (Debian packages), same registry on 127.0.0.1, page cache
// dropped before every run, runs alternating. Two images: a Debian minbase (debootstrap, split
// into 3 layers, the last with a whiteout and an opaque directory) and busybox. Also checks
// that file ownership survives (/etc/shadow is root:shadow in Debian).
//
//   HYPEDECK_BIN=target/release/hypedeck BENCH_OUT=BENCHMARKS.md node tests/bench/images-bench.mjs
import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { newDataDir, startRegistry, startServer } from "../vm/harness.mjs";
import { median, report } from "./report.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const BIN = path.resolve(process.env.HYPEDECK_BIN ?? "target/release/hypedeck");
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CACHE = path.join(root, ".bench-cache");

const secs = (xs) => `${(median(xs) / 1000).toFixed(2)} s (min ${(Math.min(...xs) / 1000).toFixed(2)})`;
const sh = (cmd, args, opts = {}) => execFileSync(cmd, args, { stdio: ["ignore", "pipe", "inherit"], ...opts }).toString();

let dropped = true;
function dropCaches() {
  try {
    sh("sync", []);
    writeFileSync("/proc/sys/vm/drop_caches", "3\n");
  } catch {
    dropped = false;
  }
}

/** A Debian minbase tree, debootstrapped once and kept in .bench-cache. */
function debianTree() {
  const tree = path.join(CACHE, "debian-minbase");
  if (!existsSync(path.join(tree, "etc/shadow"))) {
    mkdirSync(CACHE, { recursive: true });
    rmSync(tree, { recursive: true, force: true });
    sh("debootstrap", ["--variant=minbase", "bookworm", tree, "http://deb.debian.org/debian"], { stdio: ["ignore", "ignore", "inherit"] });
  }
  return tree;
}

/** Three layer dirs from `tree`: the base without /usr/share, /usr/share, then changes. */
function debianLayers(tree, work) {
  const base = path.join(work, "l1");
  const share = path.join(work, "l2");
  const changes = path.join(work, "l3");
  sh("cp", ["-al", tree, base]);
  mkdirSync(path.join(share, "usr"), { recursive: true });
  sh("mv", [path.join(base, "usr/share"), path.join(share, "usr/share")]);
  mkdirSync(path.join(base, "usr/share"));
  // Whiteout: /etc/motd goes; opaque: /var/cache/apt's old content is hidden, one new file.
  mkdirSync(path.join(changes, "etc"), { recursive: true });
  writeFileSync(path.join(changes, "etc/.wh.motd"), "");
  writeFileSync(path.join(changes, "etc/hypedeck-bench"), "layer 3\n");
  mkdirSync(path.join(changes, "var/cache/apt"), { recursive: true });
  writeFileSync(path.join(changes, "var/cache/apt/.wh..wh..opq"), "");
  writeFileSync(path.join(changes, "var/cache/apt/fresh"), "opaque\n");
  return [base, share, changes];
}

/** `user:group` numbers of `file` inside an ext4 image, read with debugfs. */
function owner(image, file) {
  const out = execFileSync("debugfs", ["-R", `stat ${file}`, image], { stdio: ["ignore", "pipe", "ignore"] }).toString();
  const m = out.match(/User:\s+(\d+)\s+Group:\s+(\d+)/);
  return m ? `${m[1]}:${m[2]}` : "missing";
}

/** skopeo copy + umoci unpack --rootless + mkfs.ext4 -d; returns ms and the disk path. */
function scripted(ref, work) {
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const t0 = performance.now();
  sh("skopeo", ["copy", "-q", "--src-tls-verify=false", `docker://${ref}`, `oci:${work}/oci:bench`]);
  sh("umoci", ["unpack", "--rootless", "--image", `${work}/oci:bench`, `${work}/bundle`], { stdio: ["ignore", "pipe", "ignore"] });
  const rootfs = `${work}/bundle/rootfs`;
  const kib = Number(sh("du", ["-sk", rootfs]).split(/\s/)[0]);
  const disk = `${work}/rootfs.ext4`;
  sh("truncate", ["-s", `${Math.ceil(kib * 1.5 + 64 * 1024)}K`, disk]);
  sh("mkfs.ext4", ["-q", "-F", "-b", "4096", "-O", "^has_journal", "-d", rootfs, disk]);
  return { ms: performance.now() - t0, disk };
}

/** Hypedeck: POST /images, then GET until ready; returns ms and the root disk path. */
async function hypedeck(client, dataDir, name) {
  await client.images.delete(name).catch(() => {});
  dropCaches();
  const t0 = performance.now();
  await client.images.create({ name });
  for (;;) {
    const image = await client.images.get(name);
    if (image.status === "ready") {
      const ms = performance.now() - t0;
      return { ms, disk: path.join(dataDir, "images", image.digest.replace("sha256:", ""), "rootfs.ext4") };
    }
    if (image.status === "failed") throw new Error(`pull failed: ${image.error}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const work = mkdtempSync(path.join(tmpdir(), "hypedeck-images-bench-"));
const registry = await startRegistry();
const dataDir = newDataDir();
const server = await startServer(BIN, dataDir);
const client = server.client();
try {
  const layers = debianLayers(debianTree(), work);
  execFileSync(path.join(root, "tests/vm/build-image.sh"),
    [layers[0], registry.host, "bench/debian:1", '{"Cmd":["/bin/bash"],"Env":["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]}', layers[1], layers[2]],
    { stdio: ["ignore", "ignore", "inherit"], env: { ...process.env, KEEP_OWNERS: "1" } });
  const rows = [];
  for (const [label, repo] of [["Debian minbase, 3 layers", "bench/debian:1"], ["busybox, 1 layer", "vm/busybox:1"]]) {
    const ref = `${registry.host}/${repo}`;
    const ours = [];
    const theirs = [];
    let oursDisk;
    let theirsDisk;
    for (let i = 0; i < RUNS; i++) {
      const a = await hypedeck(client, dataDir, ref);
      ours.push(a.ms);
      oursDisk = a.disk;
      dropCaches();
      const b = scripted(ref, path.join(work, "scripted"));
      theirs.push(b.ms);
      theirsDisk = b.disk;
    }
    const ratio = median(ours) / median(theirs);
    rows.push([`${label}: Hypedeck pull → ready`, secs(ours), `${RUNS} runs; root disk ${(statSync(oursDisk).size / 2 ** 20).toFixed(0)} MiB`]);
    rows.push([`${label}: skopeo + umoci --rootless + mkfs.ext4 -d`, secs(theirs), `${RUNS} runs`]);
    rows.push([`${label}: ratio Hypedeck / scripted`, `${ratio.toFixed(2)}×`, repo.startsWith("bench/debian") ? "goal ≤ 0.5×" : "goal ≤ 1.0×"]);
    if (repo.startsWith("bench/debian")) {
      rows.push(["/etc/shadow owner (uid:gid) in the root disk", `Hypedeck ${owner(oursDisk, "/etc/shadow")}, scripted ${owner(theirsDisk, "/etc/shadow")}`, "Debian: 0:42 (root:shadow)"]);
      rows.push(["whiteout /etc/motd, opaque /var/cache/apt", `Hypedeck ${owner(oursDisk, "/etc/motd")} / ${owner(oursDisk, "/var/cache/apt/archives")}`, "both should be missing"]);
    }
  }
  report("Images: pull + convert vs skopeo + umoci + mkfs.ext4",
    `registry on 127.0.0.1, page cache ${dropped ? "dropped" : "NOT dropped (needs root)"} before each run, ${BIN.includes("/release/") ? "release" : "debug"} \`hypedeck\`; skopeo ${sh("skopeo", ["--version"]).trim().split(" ").pop()}, umoci ${sh("umoci", ["--version"]).trim().split(" ").pop()}`,
    rows);
} finally {
  await server.stop();
  await registry.stop();
  rmSync(dataDir, { recursive: true, force: true });
  rmSync(work, { recursive: true, force: true });
}
