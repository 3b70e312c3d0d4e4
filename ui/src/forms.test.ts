import { describe, expect, test } from "vitest";

import {
  allowedKeysFrom,
  argvWarning,
  buildCreateBody,
  credentialProblem,
  explain,
  explainPull,
  fieldRank,
  imageProblem,
  memoryProblem,
  NAME_PATTERN,
  nameProblem,
  shellQuote,
  suggestName,
  willRun,
  buildVolumeParams,
  emptyCredential,
  emptyDraft,
  fieldOf,
  mask,
  parseEnvLines,
  parseHosts,
  parsePaste,
  parsePorts,
  parseTags,
  parseVolumes,
  PROBE_BODY,
  PROBE_KEY,
  rotationBody,
  shellWords,
  type CreateDraft,
} from "./forms";

const draft = (over: Partial<CreateDraft>): CreateDraft => ({ ...emptyDraft(), image: "alpine", name: "a", ...over });

describe("env, tags and hosts", () => {
  test(".env-style lines", () => {
    expect(parseEnvLines("A=1\n\n# note\nexport B='two words'\nC=x=y\nD=\"q\"\nE=")).toEqual({
      env: { A: "1", B: "two words", C: "x=y", D: "q", E: "" },
      error: null,
    });
    expect(parseEnvLines("A=1\nnope").error).toBe("line 2: expected KEY=value");
    expect(parseEnvLines("1A=x").error).toContain("not a valid variable name");
  });

  test("tags", () => {
    expect(parseTags("team=ml, purpose = agent\nsolo")).toEqual({ tags: { team: "ml", purpose: "agent", solo: "" }, error: null });
    expect(parseTags("=x").error).toContain("has no key");
  });

  test("shell words", () => {
    expect(shellWords(`sh -c 'echo "hi there"; sleep 1' a\\ b "x\\"y" ''`)).toEqual({
      words: ["sh", "-c", 'echo "hi there"; sleep 1', "a b", 'x"y', ""],
      error: null,
    });
    expect(shellWords("   ")).toEqual({ words: [], error: null });
    expect(shellWords("echo 'oops").error).toBe("unclosed ' quote");
  });

  test("ports", () => {
    expect(parsePorts("8080:80, 5353:53/udp 9000")).toEqual({
      ports: [
        { host_port: 8080, guest_port: 80, protocol: "tcp" },
        { host_port: 5353, guest_port: 53, protocol: "udp" },
        { host_port: 9000, guest_port: 9000, protocol: "tcp" },
      ],
      error: null,
    });
    expect(parsePorts("80:0").error).toContain("host:guest");
    expect(parsePorts("a:b").error).toContain('"a:b"');
    expect(buildCreateBody(draft({ ports: "8080:80", networkEnabled: false })).errors.ports).toBe("Forwarded ports need the network");
    expect(fieldOf({ code: "port_in_use", message: "host port 8080/tcp is already in use" }, draft({}))).toBe("ports");
  });

  test("hosts", () => {
    expect(parseHosts(" api.openai.com, *.openai.com\nx.io ")).toEqual(["api.openai.com", "*.openai.com", "x.io"]);
  });
});

describe("volumes", () => {
  test("read-write, read-only and overlay mounts, comma or line separated", () => {
    expect(parseVolumes("data:/data:ro, work:/work\ncache:/cache:overlay=1GB\n\nlogs : /var/log/app : RW,")).toEqual({
      volumes: [
        { volume_id: "data", mount_path: "/data", readonly: true },
        { volume_id: "work", mount_path: "/work", readonly: false },
        { volume_id: "cache", mount_path: "/cache", readonly: true, overlay: true, overlay_size: "1GB" },
        { volume_id: "logs", mount_path: "/var/log/app", readonly: false },
      ],
      error: null,
    });
    expect(parseVolumes("c:/c:overlay=512 MB").volumes).toEqual([{ volume_id: "c", mount_path: "/c", readonly: true, overlay: true, overlay_size: "512MB" }]);
    expect(parseVolumes("   \n , ")).toEqual({ volumes: [], error: null });
  });

  test("each mistake says what to write", () => {
    const error = (text: string) => parseVolumes(text).error;
    expect(error("data")).toBe('"data": use volume_id:/mount/path, e.g. data:/data:ro');
    expect(error(":/data")).toBe('":/data": start with the volume ID, e.g. data:/data');
    expect(error("my data:/data")).toContain("has spaces");
    expect(error("data:")).toBe('"data:": give a mount path after the volume ID, e.g. data:/data');
    expect(error("data:data")).toBe('"data:data": the mount path must be absolute, e.g. /data');
    expect(error("data:/mnt/../etc")).toContain('must not contain ".."');
    expect(error("data:/data:ro:rw")).toContain("one option at most");
    expect(error("data:/data:readonly")).toBe('"data:/data:readonly": unknown option "readonly"; use ro, rw or overlay=SIZE');
    expect(error("data:/data:overlay")).toContain("an overlay needs a size, e.g. overlay=1GB");
    expect(error("data:/data:overlay=big")).toContain("an overlay needs a size");
    expect(error("data:/data:overlay=0GB")).toContain("an overlay needs a size");
    expect(error("a:/data, b:/data/")).toBe('"/data" is mounted twice');
  });

  test("mounts go into the create body; mistakes land on the volumes field", () => {
    expect(buildCreateBody(draft({ volumes: "data:/data:ro\ncache:/cache:overlay=1GB" })).body?.volumes).toEqual([
      { volume_id: "data", mount_path: "/data", readonly: true },
      { volume_id: "cache", mount_path: "/cache", readonly: true, overlay: true, overlay_size: "1GB" },
    ]);
    expect(buildCreateBody(draft({ volumes: "" })).body).not.toHaveProperty("volumes");
    const bad = buildCreateBody(draft({ volumes: "data:relative" }));
    expect(bad.body).toBeNull();
    expect(Object.keys(bad.errors)).toEqual(["volumes"]);
  });

  test("the API's volume errors find the volumes field", () => {
    const at = (code: string, message: string) => fieldOf({ code, message }, draft({}));
    expect(at("invalid_request", 'invalid request: volume data: mount path "data" must be absolute')).toBe("volumes");
    expect(at("invalid_request", 'invalid request: duplicate mount path "/data"')).toBe("volumes");
    expect(at("not_found", "volume nope not found")).toBe("volumes");
    expect(at("invalid_overlay_size", 'invalid overlay_size for volume data: strconv.UnmarshalText: parsing "x": invalid syntax')).toBe("volumes");
    expect(at("invalid_request", 'request body has an error: Error at "/volumes/0/mount_path": property "mount_path" is missing')).toBe("volumes");
    expect(at("volume_not_found", "not found")).toBe("volumes");
    expect(at("invalid_size", "invalid size")).toBe("memory");
  });

  test("a new volume needs a name and a whole number of GB", () => {
    const params = (name: string, sizeGb: string, archive: { name: string; type: string } | null = null) => buildVolumeParams({ name, sizeGb, archive });
    expect(params(" data ", "10")).toEqual({ params: { name: "data", size_gb: 10 }, error: null });
    expect(params("seed", "2", { name: "seed.tar.gz", type: "" })).toEqual({ params: { name: "seed", size_gb: 2 }, error: null });
    expect(params("seed", "2", { name: "seed.TGZ", type: "" }).error).toBeNull();
    expect(params("seed", "2", { name: "seed.bin", type: "application/gzip" }).error).toBeNull();
    expect(params("", "1").error).toBe("Give the volume a name");
    for (const bad of ["", "0", "-1", "1.5", "ten"]) expect(params("data", bad).error).toBe("The size is a whole number of GB, 1 or more");
    expect(params("seed", "1", { name: "seed.zip", type: "application/zip" }).error).toBe("seed.zip is not a .tar.gz archive");
  });
});

describe("create body", () => {
  test("the minimal body", () => {
    expect(buildCreateBody(draft({}))).toEqual({ body: { image: "alpine", name: "a", network: { enabled: true } }, errors: {} });
  });

  test("everything, with a credential defaulting to Bearer ${value}", () => {
    const { body, errors } = buildCreateBody(
      draft({
        vcpus: "2",
        memory: "1 GB",
        cmd: "sleep 600",
        env: "PORT=3000",
        tags: "team=ml",
        egressEnabled: true,
        egressMode: "http_https_only",
        credentials: [{ ...emptyCredential(), key: "OPENAI_API_KEY", value: "sk-real", hosts: "api.openai.com" }],
      }),
    );
    expect(errors).toEqual({});
    expect(body).toEqual({
      image: "alpine",
      name: "a",
      vcpus: 2,
      size: "1GB",
      cmd: ["sleep", "600"],
      env: { PORT: "3000", OPENAI_API_KEY: "sk-real" },
      tags: { team: "ml" },
      credentials: {
        OPENAI_API_KEY: {
          source: { env: "OPENAI_API_KEY" },
          inject: [{ hosts: ["api.openai.com"], as: { header: "Authorization", format: "Bearer ${value}" } }],
        },
      },
      network: { enabled: true, egress: { enabled: true, enforcement: { mode: "http_https_only" } } },
    });
  });

  test("a separate source env var and no hosts (all destinations)", () => {
    const { body } = buildCreateBody(
      draft({ egressEnabled: true, credentials: [{ ...emptyCredential(), key: "K", sourceEnv: "REAL_K", value: "v" }] }),
    );
    expect(body?.env).toEqual({ REAL_K: "v" });
    expect(body?.credentials?.K).toEqual({ source: { env: "REAL_K" }, inject: [{ as: { header: "Authorization", format: "Bearer ${value}" } }] });
  });

  test("mistakes land on their fields and nothing is sent", () => {
    const { body, errors } = buildCreateBody({
      ...emptyDraft(),
      vcpus: "1.5",
      env: "oops",
      credentials: [
        { ...emptyCredential(), key: "K", value: "" },
        { ...emptyCredential(), key: "J", value: "v", format: "Bearer" },
        { ...emptyCredential(), key: "bad name", value: "v" },
      ],
    });
    expect(body).toBeNull();
    expect(Object.keys(errors).sort()).toEqual(["credentials.0", "credentials.1", "credentials.2", "env", "image", "name", "network", "vcpus"]);
    expect(errors["credentials.1"]).toContain("${value}");
  });

  test("API errors find their field", () => {
    const d = draft({ credentials: [{ ...emptyCredential(), key: "OPENAI" }] });
    const at = (code: string, message: string) => fieldOf({ code, message }, d);
    expect(at("name_conflict", "instance with name \"a\" already exists")).toBe("name");
    expect(at("image_not_ready", "image not ready")).toBe("image");
    expect(at("invalid_request", 'invalid request: credentials["OPENAI"].inject[0].hosts: invalid host pattern')).toBe("credentials.0");
    expect(at("invalid_request", 'request body has an error: doesn\'t match schema #/components/schemas/CreateInstanceRequest: Error at "/vcpus": number must be at least 1')).toBe("vcpus");
    expect(at("invalid_request", "invalid request: total memory 64.0 GB exceeds the maximum")).toBe("memory");
    expect(at("invalid_request", "invalid request: network.egress requires network.enabled=true")).toBe("network");
    expect(at("insufficient_resources", "not enough CPU")).toBe("form");
  });
});

describe("rotation", () => {
  test("the allowed keys come from upstream's 400 text", () => {
    expect(allowedKeysFrom({ code: "invalid_request", message: `invalid request: env keys [${PROBE_KEY}] are not credential source env vars; allowed keys: [A_KEY B_KEY]` })).toEqual(["A_KEY", "B_KEY"]);
    expect(allowedKeysFrom({ code: "invalid_request", message: "invalid request: instance has no credential-backed env vars to update" })).toEqual([]);
    expect(allowedKeysFrom({ code: "invalid_state", message: "instance must be running" })).toBeNull();
  });

  test("the probe can never set a value", () => {
    expect(PROBE_BODY).toEqual({ env: { [PROBE_KEY]: "" } });
  });

  test("pasting", () => {
    expect(parsePaste("A=1\nPORT=2", ["A", "B"])).toEqual({ values: { A: "1", PORT: "2" }, unknown: ["PORT"] });
    expect(parsePaste("  sk-just-a-value==  ", ["ONLY"])).toEqual({ values: { ONLY: "sk-just-a-value==" }, unknown: [] });
    expect(parsePaste("ONLY=sk-x", ["ONLY"])).toEqual({ values: { ONLY: "sk-x" }, unknown: [] });
    expect(parsePaste("value", ["A", "B"])).toEqual({ values: {}, unknown: [] });
  });

  test("only filled-in keys are sent", () => {
    expect(rotationBody({ A: "new", B: "" })).toEqual({ env: { A: "new" } });
    expect(rotationBody({ A: "" })).toBeNull();
  });

  test("masking hides length and content", () => {
    expect(mask("sk-very-long-secret-value")).toBe(mask("x"));
    expect(mask("sk-very-long-secret-value")).not.toContain("alue");
    expect(mask("")).toBe("");
  });
});

describe("hypervisor", () => {
  const ch = {
    kind: "cloud-hypervisor",
    capabilities: {
      snapshot: false,
      pause: true,
      hotplug_memory: true,
      disk_io_limit: true,
      graceful_shutdown: true,
      vsock: true,
      gpu: false,
      port_forwarding: false,
      egress_enforcement: false,
    },
  };

  test("a chosen backend goes in the body; the default sends none", () => {
    expect(buildCreateBody(draft({ hypervisor: "cloud-hypervisor" }), ch).body?.hypervisor).toBe("cloud-hypervisor");
    expect(buildCreateBody(draft({})).body).not.toHaveProperty("hypervisor");
  });

  test("what the backend cannot do is refused next to its field", () => {
    expect(buildCreateBody(draft({ hypervisor: "cloud-hypervisor", ports: "8080:80" }), ch).errors).toEqual({
      ports: "The cloud-hypervisor backend cannot forward ports",
    });
    const creds = draft({ hypervisor: "cloud-hypervisor", credentials: [{ ...emptyCredential(), key: "K", value: "v" }], egressEnabled: true });
    expect(buildCreateBody(creds, ch).errors).toEqual({
      network: "The cloud-hypervisor backend cannot enforce egress, which the credential proxy needs",
    });
  });

  test("the API's not_supported answers land on their field", () => {
    const d = draft({});
    expect(fieldOf({ code: "not_supported", message: "port forwarding (ports) is not supported by the cloud-hypervisor backend" }, d)).toBe("ports");
    expect(fieldOf({ code: "not_supported", message: "egress enforcement (network.egress, credentials) is not supported by the cloud-hypervisor backend" }, d)).toBe(
      "network",
    );
    expect(fieldOf({ code: "not_supported", message: "hypervisor vz is not available on this host: only on macOS" }, d)).toBe("hypervisor");
  });
});

describe("the create form explains before sending", () => {
  test("the name rule is upstream's regex, and each mistake says what to write", () => {
    // The OpenAPI spec's CreateInstanceRequest.name pattern, character for character.
    expect(NAME_PATTERN.source).toBe("^[a-z0-9]([a-z0-9-]*[a-z0-9])?$");
    for (const ok of ["a", "my-agent-1", "0x", "a".repeat(63)]) expect(nameProblem(ok)).toBeNull();
    expect(nameProblem("")).toBe("Give the instance a name, e.g. my-agent");
    expect(nameProblem("My_Agent")).toBe('Use lowercase letters, digits and dashes only (not capital letters). Try "my-agent".');
    expect(nameProblem("my agent!")).toBe('Use lowercase letters, digits and dashes only (not spaces, "!"). Try "my-agent".');
    expect(nameProblem("-web-")).toBe('A name cannot start or end with a dash. Try "web".');
    expect(nameProblem("a".repeat(64))).toBe("A name has at most 63 characters; this one has 64");
    expect(suggestName("  Web Server__2 ")).toBe("web-server-2");
    expect(suggestName("!!!")).toBe("");
  });

  test("memory uses upstream's size syntax, bits are refused, and 64MB is the least", () => {
    for (const ok of ["512MB", "1GB", "2g", "1 GiB", "1073741824", "64mb"]) expect(memoryProblem(ok)).toBeNull();
    expect(memoryProblem("lots")).toBe('"lots" is not a size like 1GB or 512MB');
    expect(memoryProblem("1.5GB")).toBe('"1.5GB" is not a size like 1GB or 512MB');
    expect(memoryProblem("512Mb")).toBe("512Mb is in bits; write 512MB for bytes");
    expect(memoryProblem("16MB")).toBe("16MB is less than 64MB, too little to boot");
  });

  test("image references: spaces and capitals in the repository are caught", () => {
    expect(imageProblem("docker.io/library/alpine:latest")).toBeNull();
    expect(imageProblem("localhost:5000/vm/curl:1")).toBeNull();
    expect(imageProblem("Registry.Example.com/team/app:V1")).toBeNull();
    expect(imageProblem("MyRegistry/app")).toBeNull();
    expect(imageProblem("alpine@sha256:" + "a".repeat(64))).toBeNull();
    expect(imageProblem("Alpine")).toBe('Image names are lowercase: "alpine"');
    expect(imageProblem("")).toContain("Choose an image");
    expect(imageProblem("alpine latest")).toContain("no spaces");
    expect(imageProblem("docker.io/Library/Alpine:latest")).toBe('Image names are lowercase: "docker.io/library/alpine:latest"');
  });

  test("tags follow the API's character rules", () => {
    expect(buildCreateBody(draft({ tags: "team=ml, owner=a@b.c" })).body?.tags).toEqual({ team: "ml", owner: "a@b.c" });
    expect(buildCreateBody(draft({ tags: "bad key!=x" })).errors.tags).toBe('The tag key "bad key!" can only use letters, digits, spaces and _ . : / = + @ -');
    expect(buildCreateBody(draft({ tags: "k=v;rm" })).errors.tags).toContain('The value of tag "k"');
  });

  test("every mistake at once, in the form's order", () => {
    const { body, errors } = buildCreateBody(draft({ name: "My_Agent", memory: "lots", tags: "bad key!=x", env: "oops", cmd: "echo 'x" }));
    expect(body).toBeNull();
    expect(Object.keys(errors).sort((a, b) => fieldRank(a as never) - fieldRank(b as never))).toEqual(["name", "memory", "cmd", "env", "tags"]);
    expect(errors.memory).toBe('"lots" is not a size like 1GB or 512MB');
    expect(errors.cmd).toBe("The command has an unclosed ' quote");
    expect(fieldRank("credentials.1")).toBeGreaterThan(fieldRank("credentials.0"));
    expect(fieldRank("credentials.9")).toBeLessThan(fieldRank("cmd"));
  });

  test("a credential's mistake names the input it is about", () => {
    const c = (over: object) => ({ ...emptyCredential(), key: "K", value: "v", ...over });
    expect(credentialProblem(c({}), [], {})).toBeNull();
    expect(credentialProblem(c({ key: "" }), [], {})?.part).toBe("key");
    expect(credentialProblem(c({ key: "1K" }), [], {})?.part).toBe("key");
    expect(credentialProblem(c({}), ["K"], {})).toEqual({ part: "key", message: "K is used by two credentials" });
    expect(credentialProblem(c({ sourceEnv: "a-b" }), [], {})?.part).toBe("source");
    expect(credentialProblem(c({ value: "" }), [], {})?.part).toBe("value");
    expect(credentialProblem(c({ value: "", sourceEnv: "FROM_ENV" }), [], { FROM_ENV: "x" })).toBeNull();
    expect(credentialProblem(c({ format: "Bearer" }), [], {})?.part).toBe("format");
    expect(credentialProblem(c({ header: " " }), [], {})?.part).toBe("header");
  });

  test("an entrypoint override is sent as words", () => {
    expect(buildCreateBody(draft({ entrypoint: "/bin/sh -c", cmd: "'echo hi'" })).body).toMatchObject({ entrypoint: ["/bin/sh", "-c"], cmd: ["echo hi"] });
    expect(buildCreateBody(draft({})).body).not.toHaveProperty("entrypoint");
    expect(buildCreateBody(draft({ entrypoint: '"oops' })).errors.entrypoint).toBe('The entrypoint has an unclosed " quote');
  });
});

describe("the API's errors in plain words", () => {
  const d = draft({ name: "Bad_Name", memory: "lots" });
  const say = (code: string, message: string, over: Partial<CreateDraft> = {}) => explain({ code, message }, { ...d, ...over });

  test("known answers become sentences on their field", () => {
    expect(say("name_conflict", 'instance name "dup" already exists')).toEqual({ field: "name", message: 'An instance named "dup" already exists. Choose another name.' });
    expect(
      say("Bad Request", 'request body has an error: doesn\'t match schema #/components/schemas/CreateInstanceRequest: Error at "/name": string doesn\'t match the regular expression "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"'),
    ).toEqual({ field: "name", message: 'Use lowercase letters, digits and dashes only (not capital letters). Try "bad-name".' });
    expect(say("invalid_size", 'invalid size format: strconv.UnmarshalText: parsing "lots": invalid syntax')).toEqual({ field: "memory", message: '"lots" is not a size like 1GB or 512MB' });
    expect(say("invalid_size", 'invalid size format: strconv.UnmarshalText: parsing "1Gb": unit with capital unit prefix and lower case unit (b) - bits, not bytes').message).toBe(
      "1Gb is in bits; write 1GB for bytes",
    );
    expect(say("invalid_request", "invalid request: vcpus 99 exceeds maximum allowed 16 per instance")).toEqual({ field: "vcpus", message: "This server allows at most 16 vCPUs per instance" });
    expect(say("invalid_request", "invalid request: total memory 64.0 GB exceeds the maximum of 32.0 GB per instance")).toEqual({
      field: "memory",
      message: "This server allows at most 32 GB of memory per instance",
    });
    expect(say("Bad Request", 'request body has an error: doesn\'t match schema #/components/schemas/CreateInstanceRequest: Error at "/tags": property "a b!": string doesn\'t match the regular expression "^[A-Za-z0-9 _.:/=+@-]+$"')).toEqual({
      field: "tags",
      message: 'The tag "a b!" can only use letters, digits, spaces and _ . : / = + @ -',
    });
    expect(say("invalid_name", "invalid image reference", { image: "Not Valid" })).toEqual({ field: "image", message: '"Not Valid" is not an image reference like docker.io/library/alpine:latest' });
    expect(say("port_in_use", "host port 8080/tcp is already in use")).toEqual({ field: "ports", message: "Host port 8080/tcp is already in use. Choose another host port." });
    expect(say("invalid_request", "invalid request: no command to run: the image has no Entrypoint or Cmd and none was given")).toEqual({
      field: "cmd",
      message: "The image has no Entrypoint or Cmd: give a Command",
    });
    // No regex, no OpenAPI path, no Go function in any of them.
    for (const m of [say("invalid_size", 'invalid size format: strconv.UnmarshalText: parsing "lots": invalid syntax').message]) expect(m).not.toMatch(/strconv|#\/components|\^\[/);
  });

  test("an unknown answer keeps the server's words and code", () => {
    expect(say("insufficient_quota", "quota of 3 instances reached")).toEqual({ field: "form", message: "quota of 3 instances reached (insufficient_quota)" });
    expect(say("invalid_request", "invalid request: env.FOO is reserved")).toEqual({ field: "env", message: "invalid request: env.FOO is reserved (invalid_request)" });
  });

  test("pull failures", () => {
    expect(explainPull({ code: "image_pull_failed", message: "manifest unknown" }, "x:1")).toBe("Could not pull x:1: manifest unknown");
    expect(explainPull({ code: "dependency_missing", message: "no image cache" }, "x:1")).toBe("This server cannot pull images: no image cache");
    expect(explainPull({ code: "teapot", message: "short and stout" }, "x:1")).toBe("Could not pull x:1: short and stout (teapot)");
  });
});

describe("what will run", () => {
  const image = { entrypoint: ["/bin/sh", "-c"], cmd: ["sleep infinity"] };

  test("Docker's rules: Command replaces Cmd; an Entrypoint override drops the image's Cmd", () => {
    expect(willRun(image, [], [])).toEqual(["/bin/sh", "-c", "sleep infinity"]);
    expect(willRun(image, [], ["echo hi"])).toEqual(["/bin/sh", "-c", "echo hi"]);
    expect(willRun(image, ["/bin/echo"], [])).toEqual(["/bin/echo"]);
    expect(willRun(image, ["/bin/echo"], ["a", "b"])).toEqual(["/bin/echo", "a", "b"]);
    expect(willRun({ entrypoint: null, cmd: ["/bin/sh"] }, [], [])).toEqual(["/bin/sh"]);
    expect(willRun({}, [], [])).toEqual([]);
    // Not known yet: only an Entrypoint override makes the argv certain.
    expect(willRun(null, [], ["echo"])).toBeNull();
    expect(willRun(null, ["/bin/true"], [])).toEqual(["/bin/true"]);
  });

  test("the idle-shell trap is named, with the fix", () => {
    const argv = willRun(image, [], ["sh", "-c", "echo hi; sleep 1"])!;
    expect(shellQuote(argv)).toBe("/bin/sh -c sh -c 'echo hi; sleep 1'");
    expect(argvWarning(argv)).toBe(
      `/bin/sh -c runs only "sh"; the words after it become its $0, $1…, so this starts an idle shell. Write the Command as one quoted word: 'echo hi; sleep 1'.`,
    );
    expect(argvWarning(["/bin/sh", "-c", "echo", "hello"])).toContain('runs only "echo"');
    expect(argvWarning(["/bin/sh", "-c", "echo hi; sleep 1"])).toBeNull();
    expect(argvWarning(["sh", "-c", "echo $0", "name"])).toBeNull();
    expect(argvWarning(["/usr/bin/python3", "-c", "x", "y"])).toBeNull();
    expect(argvWarning([])).toContain("Nothing to run");
  });

  test("shell quoting round-trips through shellWords", () => {
    const words = ["sh", "-c", "it's a \"test\"", "", "plain/path:1"];
    expect(shellWords(shellQuote(words)).words).toEqual(words);
  });
});
