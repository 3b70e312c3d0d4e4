// Pure form logic: the create form → an `InstanceCreateParams` body with every mistake we can
// see before sending (name, memory size, image, tags, command, credentials), API errors → the
// field they belong to and a plain sentence (`explain`), what an instance will run (`willRun`,
// Docker's rules) and its traps, the new-volume form, and the rotation form (which keys rotate,
// paste parsing, what to send). Vitest covers all of it (forms.test.ts).
import type Hypeman from "@onkernel/hypeman";

import type { BackendCaps, Problem } from "./model";

export type CreateBody = Hypeman.InstanceCreateParams;

/** The default header and format a credential is injected as. */
export const DEFAULT_HEADER = "Authorization";
export const DEFAULT_FORMAT = "Bearer ${value}";

export interface CredentialDraft {
  /** Guest-visible env var name; the guest sees `mock-<key>`. */
  key: string;
  /** Host env var holding the real value (defaults to `key`). */
  sourceEnv: string;
  /** The real value: stored in the keychain by the engine, never shown to the guest. */
  value: string;
  /** Destination hosts, comma or space separated (`api.openai.com, *.openai.com`); empty: all. */
  hosts: string;
  header: string;
  format: string;
}

export interface CreateDraft {
  image: string;
  name: string;
  vcpus: string;
  /** `"1GB"`, `"512MB"`: upstream's size syntax; empty: server default. */
  memory: string;
  /** Overrides the image's CMD, as shell words (`sh -c 'echo hi'`); empty: the image's. */
  cmd: string;
  /** Overrides the image's ENTRYPOINT (and so drops its CMD), as shell words; empty: the image's. */
  entrypoint: string;
  /** `KEY=value` lines. */
  env: string;
  /** `key=value` lines or comma separated. */
  tags: string;
  /** `8080:80, 5353:53/udp`: host port : guest port [/protocol]. */
  ports: string;
  /** `data:/data:ro, cache:/cache:overlay=1GB`: volume_id:/mount/path[:ro|:rw|:overlay=SIZE]. */
  volumes: string;
  /** A backend kind (`cloud-hypervisor`…); empty: the server's default. */
  hypervisor: string;
  networkEnabled: boolean;
  egressEnabled: boolean;
  egressMode: "all" | "http_https_only";
  credentials: CredentialDraft[];
}

export function emptyCredential(): CredentialDraft {
  return { key: "", sourceEnv: "", value: "", hosts: "", header: DEFAULT_HEADER, format: DEFAULT_FORMAT };
}

export function emptyDraft(): CreateDraft {
  return {
    image: "",
    name: "",
    vcpus: "",
    memory: "",
    cmd: "",
    entrypoint: "",
    env: "",
    tags: "",
    ports: "",
    volumes: "",
    hypervisor: "",
    networkEnabled: true,
    egressEnabled: false,
    egressMode: "all",
    credentials: [],
  };
}

/** Field names errors attach to. `credentials.N` is the N-th credential row. */
export type Field =
  | "image"
  | "name"
  | "vcpus"
  | "memory"
  | "cmd"
  | "entrypoint"
  | "env"
  | "tags"
  | "ports"
  | "volumes"
  | "network"
  | "hypervisor"
  | `credentials.${number}`
  | "form";
export type FieldErrors = Partial<Record<Field, string>>;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** The fields in the order the create form shows them: the first bad one gets the focus. */
export const FIELD_ORDER: readonly string[] = ["image", "name", "vcpus", "memory", "hypervisor", "credentials", "cmd", "entrypoint", "env", "tags", "volumes", "ports", "network", "form"];

/** Where `field` comes in the form (credentials by row), for sorting errors the way the eye reads. */
export function fieldRank(field: Field): number {
  const m = /^credentials\.(\d+)$/.exec(field);
  const base = FIELD_ORDER.indexOf(m ? "credentials" : field);
  return (base < 0 ? FIELD_ORDER.length : base) * 1000 + (m ? Number(m[1]) : 0);
}

/** What a field is called in sentences and in the error summary. */
export function fieldLabel(field: Field): string {
  const m = /^credentials\.(\d+)$/.exec(field);
  if (m) return `Credential ${Number(m[1]) + 1}`;
  const labels: Record<string, string> = {
    image: "Image",
    name: "Name",
    vcpus: "vCPUs",
    memory: "Memory",
    hypervisor: "Hypervisor",
    cmd: "Command",
    entrypoint: "Entrypoint",
    env: "Environment",
    tags: "Tags",
    volumes: "Volumes",
    ports: "Forwarded ports",
    network: "Network",
    form: "Create",
  };
  return labels[field] ?? field;
}

/** Upstream's rule for instance names (`CreateInstanceRequest.name` in the OpenAPI spec). */
export const NAME_PATTERN = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
export const NAME_MAX = 63;
/** The name rule in words, shown under the name field. */
export const NAME_RULE = "Lowercase letters, digits and dashes; it starts and ends with a letter or digit (at most 63 characters).";

/** A name that follows the rule, made from `name` (`My_Agent 2` → `my-agent-2`), or "" if none. */
export function suggestName(name: string): string {
  return name
    .trim()
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-{2,}/g, "-")
    .replace(/^-+|-+$/g, "")
    .slice(0, NAME_MAX)
    .replace(/-+$/, "");
}

/** Why `name` is not a valid instance name, in a sentence; null when it is. */
export function nameProblem(raw: string): string | null {
  const name = raw.trim();
  if (name === "") return "Give the instance a name, e.g. my-agent";
  if (name.length > NAME_MAX) return `A name has at most ${NAME_MAX} characters; this one has ${name.length}`;
  if (NAME_PATTERN.test(name)) return null;
  const suggestion = suggestName(name);
  const tryIt = suggestion && suggestion !== name ? ` Try "${suggestion}".` : "";
  if (/^[a-z0-9-]+$/.test(name)) return `A name cannot start or end with a dash.${tryIt}`;
  const bad = [...new Set(name.replace(/[a-z0-9-]/g, ""))];
  const what = bad.some((c) => /[A-Z]/.test(c))
    ? "capital letters"
    : bad.map((c) => (c === " " ? "spaces" : `"${c}"`)).join(", ");
  return `Use lowercase letters, digits and dashes only (not ${what}).${tryIt}`;
}

const SIZE = /^(\d+)\s*([a-z]*)$/i;
const SIZE_UNIT: Record<string, number> = { "": 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3, t: 1024 ** 4, tb: 1024 ** 4, tib: 1024 ** 4 };

/** Bytes of a memory size in upstream's syntax (`1GB`, `512mb`, `2G`; binary units), or null. */
export function sizeBytesOf(text: string): number | null {
  const m = SIZE.exec(text.trim());
  if (!m || /^[KMGT]b$/.test(m[2]!)) return null;
  const unit = SIZE_UNIT[m[2]!.toLowerCase()];
  return unit === undefined ? null : Number(m[1]) * unit;
}

/**
 * Why `text` is not a memory size a VM can boot with; null when it is. The Settings page checks
 * its default memory with the same words.
 */
export function memoryProblem(text: string): string | null {
  const size = text.trim();
  if (/^\d+\s*[KMGT]b$/.test(size)) return `${size} is in bits; write ${size.slice(0, -1)}B for bytes`;
  const bytes = sizeBytesOf(size);
  if (bytes === null) return `${JSON.stringify(text)} is not a size like 1GB or 512MB`;
  if (bytes < 64 * 1024 ** 2) return `${size} is less than 64MB, too little to boot`;
  return null;
}

/** Why `image` is not an OCI reference the server will take (the obvious cases); null otherwise. */
export function imageProblem(raw: string): string | null {
  const image = raw.trim();
  if (image === "") return "Choose an image, e.g. docker.io/library/alpine:latest";
  if (/\s/.test(image)) return "An image reference has no spaces, e.g. docker.io/library/alpine:latest";
  const [first, ...rest] = image.split("@")[0]!.split("/");
  // docker's rule: the first component is a registry when it has a dot, a colon or a capital
  // letter, or is localhost.
  const path = first && rest.length && (/[.:A-Z]/.test(first) || first === "localhost") ? rest.join("/") : [first, ...rest].join("/");
  const repository = path.replace(/:[^/]*$/, "");
  if (/[A-Z]/.test(repository)) return `Image names are lowercase: ${JSON.stringify(image.replace(repository, repository.toLowerCase()))}`;
  return null;
}

const TAG_KEY = /^[A-Za-z0-9 _.:/=+@-]+$/;
const TAG_VALUE = /^[A-Za-z0-9 _.:/=+@-]*$/;
const TAG_CHARS = "letters, digits, spaces and _ . : / = + @ -";

/**
 * Parses `KEY=value` lines (blank lines and `#` comments skipped; `export ` prefixes and one
 * pair of surrounding quotes tolerated, as in a `.env` file). Values keep everything after the
 * first `=`, so base64 and URLs survive.
 */
export function parseEnvLines(text: string): { env: Record<string, string>; error: string | null } {
  const env: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  for (const [n, raw] of lines.entries()) {
    const line = raw.trim().replace(/^export\s+/, "");
    if (line === "" || line.startsWith("#")) continue;
    const eq = line.indexOf("=");
    if (eq <= 0) return { env, error: `line ${n + 1}: expected KEY=value` };
    const key = line.slice(0, eq).trim();
    if (!ENV_NAME.test(key)) return { env, error: `line ${n + 1}: ${JSON.stringify(key)} is not a valid variable name` };
    let value = line.slice(eq + 1);
    const q = value[0];
    if (value.length >= 2 && (q === '"' || q === "'") && value.endsWith(q)) value = value.slice(1, -1);
    env[key] = value;
  }
  return { env, error: null };
}

/**
 * Splits a command line into words the way a POSIX shell would for plain words, single and
 * double quotes and backslash escapes (no expansion). Errors on an unclosed quote.
 */
export function shellWords(text: string): { words: string[]; error: string | null } {
  const words: string[] = [];
  let word = "";
  let inWord = false;
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote === "'") {
      if (c === "'") quote = null;
      else word += c;
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else if (c === "\\" && i + 1 < text.length && '"\\$`'.includes(text[i + 1]!)) word += text[++i];
      else word += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      inWord = true;
    } else if (c === "\\" && i + 1 < text.length) {
      word += text[++i];
      inWord = true;
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word);
      word = "";
      inWord = false;
    } else {
      word += c;
      inWord = true;
    }
  }
  if (quote) return { words, error: `unclosed ${quote} quote` };
  if (inWord) words.push(word);
  return { words, error: null };
}

/** Tags from `key=value` pairs separated by commas or new lines. */
export function parseTags(text: string): { tags: Record<string, string>; error: string | null } {
  const tags: Record<string, string> = {};
  for (const part of text.split(/[,\n]/)) {
    const item = part.trim();
    if (item === "") continue;
    const eq = item.indexOf("=");
    const key = (eq < 0 ? item : item.slice(0, eq)).trim();
    if (key === "") return { tags, error: `${JSON.stringify(item)} has no key` };
    const value = eq < 0 ? "" : item.slice(eq + 1).trim();
    if (!TAG_KEY.test(key)) return { tags, error: `The tag key ${JSON.stringify(key)} can only use ${TAG_CHARS}` };
    if (!TAG_VALUE.test(value)) return { tags, error: `The value of tag ${JSON.stringify(key)} can only use ${TAG_CHARS}` };
    if (key.length > 128) return { tags, error: `The tag key ${JSON.stringify(key.slice(0, 20))}… is longer than 128 characters` };
    if (value.length > 256) return { tags, error: `The value of tag ${JSON.stringify(key)} is longer than 256 characters` };
    tags[key] = value;
  }
  if (Object.keys(tags).length > 50) return { tags, error: `At most 50 tags; there are ${Object.keys(tags).length}` };
  return { tags, error: null };
}

export interface PortMapping {
  host_port: number;
  guest_port: number;
  protocol: "tcp" | "udp";
}

/** Port forwards from `host:guest[/tcp|udp]` items (a bare `80` forwards 80 to 80). */
export function parsePorts(text: string): { ports: PortMapping[]; error: string | null } {
  const ports: PortMapping[] = [];
  for (const part of text.split(/[\s,]+/)) {
    if (part === "") continue;
    const m = /^(?:(\d+):)?(\d+)(?:\/(tcp|udp))?$/i.exec(part);
    const host = Number(m?.[1] ?? m?.[2]);
    const guest = Number(m?.[2]);
    if (!m || !(host >= 1 && host <= 65535) || !(guest >= 1 && guest <= 65535)) {
      return { ports, error: `${JSON.stringify(part)}: use host:guest, e.g. 8080:80 or 5353:53/udp` };
    }
    ports.push({ host_port: host, guest_port: guest, protocol: (m[3]?.toLowerCase() as "tcp" | "udp" | undefined) ?? "tcp" });
  }
  return { ports, error: null };
}

export type VolumeMount = Hypeman.VolumeMount;

/** Upstream's size syntax for an overlay (`1GB`, `512MB`, `2 G`): a whole number and a byte unit. */
const OVERLAY_SIZE = /^[1-9]\d*\s*(?:[kmgtpe](?:i?b)?|b)?$/i;

/**
 * Volume mounts from `volume_id:/mount/path[:ro|:rw|:overlay=SIZE]` items separated by commas
 * or new lines. No option (or `rw`) mounts read-write; `overlay=SIZE` mounts read-only with a
 * per-instance writable overlay of that size. Catches what upstream would refuse about the
 * shape (relative or `..` paths, the same path twice, an overlay without a size); the API
 * checks the rest (unknown volumes, system directories).
 */
export function parseVolumes(text: string): { volumes: VolumeMount[]; error: string | null } {
  const volumes: VolumeMount[] = [];
  const seen = new Set<string>();
  for (const part of text.split(/[,\n]/)) {
    const item = part.trim();
    if (item === "") continue;
    const quoted = JSON.stringify(item);
    const colon = item.indexOf(":");
    if (colon < 0) return { volumes, error: `${quoted}: use volume_id:/mount/path, e.g. data:/data:ro` };
    const id = item.slice(0, colon).trim();
    const [rawPath = "", ...options] = item.slice(colon + 1).split(":");
    const path = rawPath.trim();
    if (id === "") return { volumes, error: `${quoted}: start with the volume ID, e.g. data:/data` };
    if (/\s/.test(id)) return { volumes, error: `${quoted}: the volume ID ${JSON.stringify(id)} has spaces` };
    if (path === "") return { volumes, error: `${quoted}: give a mount path after the volume ID, e.g. ${id}:/data` };
    if (!path.startsWith("/")) return { volumes, error: `${quoted}: the mount path must be absolute, e.g. /${path}` };
    if (path.split("/").includes("..")) return { volumes, error: `${quoted}: the mount path must not contain ".."` };
    if (options.length > 1) return { volumes, error: `${quoted}: one option at most: ro, rw or overlay=SIZE` };
    const clean = path.replace(/\/+$/, "") || "/";
    if (seen.has(clean)) return { volumes, error: `${JSON.stringify(clean)} is mounted twice` };
    seen.add(clean);

    const option = options[0]?.trim() ?? "";
    const overlay = /^overlay(?:=(.*))?$/i.exec(option);
    if (option === "" || option.toLowerCase() === "rw") {
      volumes.push({ volume_id: id, mount_path: path, readonly: false });
    } else if (option.toLowerCase() === "ro") {
      volumes.push({ volume_id: id, mount_path: path, readonly: true });
    } else if (overlay) {
      const size = (overlay[1] ?? "").replace(/\s+/g, "");
      if (!OVERLAY_SIZE.test(size)) return { volumes, error: `${quoted}: an overlay needs a size, e.g. overlay=1GB` };
      volumes.push({ volume_id: id, mount_path: path, readonly: true, overlay: true, overlay_size: size });
    } else {
      return { volumes, error: `${quoted}: unknown option ${JSON.stringify(option)}; use ro, rw or overlay=SIZE` };
    }
  }
  return { volumes, error: null };
}

/** Hosts from a comma/space separated list. */
export function parseHosts(text: string): string[] {
  return text
    .split(/[\s,]+/)
    .map((h) => h.trim())
    .filter((h) => h !== "");
}

/** Which input of a credential row a mistake is about. */
export type CredentialPart = "key" | "source" | "value" | "format" | "header";

/**
 * The first mistake in one credential row, in plain words, and which input it is about; null
 * when the row is fine. `declared` are the names of the rows above it, `env` the Environment
 * field's variables (a row may take its value from one of them).
 */
export function credentialProblem(c: CredentialDraft, declared: readonly string[], env: Record<string, string>): { part: CredentialPart; message: string } | null {
  const key = c.key.trim();
  const source = c.sourceEnv.trim() || key;
  if (key === "") return { part: "key", message: "Name the variable the program reads the key from, e.g. OPENAI_API_KEY" };
  if (!ENV_NAME.test(key)) return { part: "key", message: `${JSON.stringify(key)} is not a variable name: use letters, digits and _, not starting with a digit` };
  if (declared.includes(key)) return { part: "key", message: `${key} is used by two credentials` };
  if (!ENV_NAME.test(source)) return { part: "source", message: `${JSON.stringify(source)} is not a variable name: use letters, digits and _` };
  if (c.value.trim() === "" && !(source in env)) return { part: "value", message: "Paste the real key (the program only ever sees a placeholder)" };
  if (!c.format.includes("${value}")) return { part: "format", message: "The format must contain ${value}, where the real key goes" };
  if (c.header.trim() === "") return { part: "header", message: "Name the header that carries the key, e.g. Authorization" };
  return null;
}

/**
 * The create body for a draft, or the errors to show next to each field. `backend` is what
 * the chosen backend supports, when the server says (Hypedeck's `/hypervisors`). Only mistakes
 * the user can fix before sending are caught here; the API validates everything again and its
 * errors land on the same fields (`fieldOf`).
 */
export function buildCreateBody(draft: CreateDraft, backend?: BackendCaps): { body: CreateBody | null; errors: FieldErrors } {
  const errors: FieldErrors = {};
  const image = draft.image.trim();
  const name = draft.name.trim();
  const imageError = imageProblem(image);
  if (imageError) errors.image = imageError;
  const nameError = nameProblem(name);
  if (nameError) errors.name = nameError;

  let vcpus: number | undefined;
  if (draft.vcpus.trim() !== "") {
    vcpus = Number(draft.vcpus);
    if (!Number.isInteger(vcpus) || vcpus < 1) errors.vcpus = "A whole number of vCPUs, 1 or more";
  }
  const memory = draft.memory.trim().replace(/\s+/g, "");
  if (memory !== "") {
    const memoryError = memoryProblem(memory);
    if (memoryError) errors.memory = memoryError;
  }
  const cmd = shellWords(draft.cmd);
  if (cmd.error) errors.cmd = `The command has an ${cmd.error}`;
  const entrypoint = shellWords(draft.entrypoint);
  if (entrypoint.error) errors.entrypoint = `The entrypoint has an ${entrypoint.error}`;

  const parsedEnv = parseEnvLines(draft.env);
  if (parsedEnv.error) errors.env = parsedEnv.error;
  const env = { ...parsedEnv.env };
  const parsedTags = parseTags(draft.tags);
  if (parsedTags.error) errors.tags = parsedTags.error;
  const parsedPorts = parsePorts(draft.ports);
  if (parsedPorts.error) errors.ports = parsedPorts.error;
  else if (parsedPorts.ports.length && !draft.networkEnabled) errors.ports = "Forwarded ports need the network";
  const parsedVolumes = parseVolumes(draft.volumes);
  if (parsedVolumes.error) errors.volumes = parsedVolumes.error;

  const credentials: NonNullable<CreateBody["credentials"]> = {};
  for (const [i, c] of draft.credentials.entries()) {
    const key = c.key.trim();
    const source = c.sourceEnv.trim() || key;
    const problem = credentialProblem(c, Object.keys(credentials), env);
    if (problem) errors[`credentials.${i}`] = problem.message;
    if (c.value !== "") env[source] = c.value;
    const hosts = parseHosts(c.hosts);
    credentials[key] = {
      source: { env: source },
      inject: [{ ...(hosts.length ? { hosts } : {}), as: { header: c.header.trim(), format: c.format } }],
    };
  }
  const hasCredentials = draft.credentials.length > 0;
  if (hasCredentials && (!draft.networkEnabled || !draft.egressEnabled)) {
    errors.network = "Credentials need the network and the egress proxy";
  }
  if (backend) {
    const { kind, capabilities: caps } = backend;
    if (parsedPorts.ports.length && !caps.port_forwarding && !errors.ports) {
      errors.ports = `The ${kind} backend cannot forward ports`;
    }
    if (draft.networkEnabled && draft.egressEnabled && !caps.egress_enforcement && !errors.network) {
      errors.network = `The ${kind} backend cannot enforce egress, which the credential proxy needs`;
    }
  }
  if (Object.keys(errors).length > 0) return { body: null, errors };

  const body: CreateBody = { image, name };
  if (draft.hypervisor !== "") body.hypervisor = draft.hypervisor as NonNullable<CreateBody["hypervisor"]>;
  if (vcpus !== undefined) body.vcpus = vcpus;
  if (memory !== "") body.size = memory;
  if (cmd.words.length) body.cmd = cmd.words;
  if (entrypoint.words.length) body.entrypoint = entrypoint.words;
  if (Object.keys(env).length) body.env = env;
  if (Object.keys(parsedTags.tags).length) body.tags = parsedTags.tags;
  if (parsedVolumes.volumes.length) body.volumes = parsedVolumes.volumes;
  if (hasCredentials) body.credentials = credentials;
  // Hypedeck extension; other Hypeman servers ignore it.
  if (parsedPorts.ports.length) (body as CreateBody & { ports?: PortMapping[] }).ports = parsedPorts.ports;
  body.network = draft.networkEnabled
    ? {
        enabled: true,
        ...(draft.egressEnabled ? { egress: { enabled: true, enforcement: { mode: draft.egressMode } } } : {}),
      }
    : { enabled: false };
  return { body, errors };
}

/** The form field an API error is about, so it shows next to that field. */
export function fieldOf(problem: Problem, draft: CreateDraft): Field {
  const m = problem.message;
  if (problem.code === "name_conflict" || problem.code === "already_exists") return "name";
  if (problem.code === "image_not_ready" || problem.code === "invalid_name" || problem.code === "invalid_platform") return "image";
  // `volume data: mount path "x" must be absolute`, `duplicate mount path "/data"`, `Error at "/volumes/0/…"`.
  if (/volume/i.test(problem.code) || /\bvolumes?\b|\bmount[ _]paths?\b/i.test(m)) return "volumes";
  if (problem.code === "invalid_size" || problem.code === "invalid_hotplug_size") return "memory";
  if (problem.code === "port_in_use" || /\bports\[/.test(m) || /^port forwarding/.test(m)) return "ports";
  if (problem.code === "not_supported" && /^egress enforcement/.test(m)) return "network";
  if (/^hypervisor \S+ is not available/.test(m)) return "hypervisor";
  if (/no command to run/.test(m)) return "cmd";
  const credential = /credentials\["([^"]*)"\]/.exec(m);
  if (credential) {
    const i = draft.credentials.findIndex((c) => c.key.trim() === credential[1]);
    return i >= 0 ? `credentials.${i}` : "form";
  }
  const schemaField = /Error at "\/([a-z_]+)/.exec(m)?.[1];
  const word = schemaField ?? /\b(image|name|vcpus|size|memory|cmd|entrypoint|env|tags|network|credentials)\b/.exec(m)?.[1];
  switch (word) {
    case "image":
    case "name":
    case "cmd":
    case "entrypoint":
    case "vcpus":
    case "env":
    case "tags":
    case "network":
      return word;
    case "size":
    case "memory":
      return "memory";
    case "credentials":
      return draft.credentials.length ? "credentials.0" : "network";
    default:
      return "form";
  }
}

const capitalize = (text: string): string => text.charAt(0).toUpperCase() + text.slice(1);
/** `"32.0 GB"` → `"32 GB"`. */
const plainSize = (text: string): string => text.replace(/\.0 /, " ");

/**
 * An API error as a plain sentence next to the field it is about. Known codes and messages
 * (upstream's and Hypedeck's) are translated; anything else keeps the server's own words and
 * code, so nothing is lost.
 */
export function explain(problem: Problem, draft: CreateDraft): { field: Field; message: string } {
  const m = problem.message;
  const field = fieldOf(problem, draft);
  const at = (f: Field, message: string) => ({ field: f, message });

  // The OpenAPI schema check: `… Error at "/name": string doesn't match the regular expression "…"`.
  const schema = /Error at "\/([^"]*)": (.*)$/.exec(m);
  if (schema) {
    const [path = "", detail = ""] = [schema[1], schema[2]];
    const top = path.split("/")[0]!;
    if (top === "name") return at("name", nameProblem(draft.name) ?? `The server refused the name: ${detail}`);
    if (top === "vcpus") return at("vcpus", "A whole number of vCPUs, 1 or more");
    if (top === "tags") {
      const key = /property "([^"]*)"/.exec(detail)?.[1] ?? path.split("/")[1];
      return at("tags", key !== undefined ? `The tag ${JSON.stringify(key)} can only use ${TAG_CHARS}` : `Tags can only use ${TAG_CHARS}`);
    }
    if (top === "hypervisor") return at("hypervisor", "This server does not know that hypervisor");
    if (/property "[^"]*" is missing/.test(detail)) return at(field, `${fieldLabel(field)} is required`);
    return at(field, `The server refused ${fieldLabel(field).toLowerCase()}: ${detail}`);
  }

  switch (problem.code) {
    case "name_conflict":
    case "already_exists": {
      const name = /name "([^"]*)"/.exec(m)?.[1] ?? draft.name.trim();
      return at("name", `An instance named "${name}" already exists. Choose another name.`);
    }
    case "invalid_size": {
      const input = /parsing "([^"]*)"/.exec(m)?.[1] ?? draft.memory.trim();
      return at("memory", /bits/.test(m) ? `${input} is in bits; write ${input.slice(0, -1)}B for bytes` : `${JSON.stringify(input)} is not a size like 1GB or 512MB`);
    }
    case "invalid_name":
      if (/image reference/.test(m)) return at("image", `${JSON.stringify(draft.image.trim())} is not an image reference like docker.io/library/alpine:latest`);
      break;
    case "image_not_ready":
      return at("image", "The image is still being pulled. Try again in a moment.");
    case "port_in_use":
      return at("ports", `${capitalize(m)}. Choose another host port.`);
    case "insufficient_resources":
      return at(field, `Not enough free resources on the host: ${m}`);
    case "secrets_unavailable":
      return at(field === "form" ? "form" : field, `The keychain cannot be reached, so credentials cannot be stored: ${m}`);
    case "unreachable":
      return at("form", `Cannot reach the server. ${capitalize(m)}`);
    case "Unauthorized":
    case "http_401":
      return at("form", "The server refused the API token. Reconnect with a valid token.");
    case "not_supported":
      return at(field, `${capitalize(m)}.`);
  }
  const vcpus = /vcpus (\d+) exceeds maximum allowed (\d+)/.exec(m);
  if (vcpus) return at("vcpus", `This server allows at most ${vcpus[2]} vCPUs per instance`);
  const memory = /total memory (.+) exceeds the maximum of (.+) per instance/.exec(m);
  if (memory) return at("memory", `This server allows at most ${plainSize(memory[2]!)} of memory per instance`);
  if (/no command to run/.test(m)) return at("cmd", "The image has no Entrypoint or Cmd: give a Command");
  if (problem.code === "dependency_missing" && field === "form" && /image/.test(m)) return at("image", `This server cannot pull images: ${m}`);
  return at(field, `${m} (${problem.code})`);
}

/** A failed image pull (`POST /images`, then following it) as a plain sentence for the image field. */
export function explainPull(problem: Problem, image: string): string {
  const m = problem.message;
  switch (problem.code) {
    case "image_pull_failed":
      return `Could not pull ${image}: ${m}`;
    case "invalid_name":
    case "Bad Request":
      return `${JSON.stringify(image)} is not an image reference like docker.io/library/alpine:latest`;
    case "not_found":
      return `${image} was not found in its registry`;
    case "rate_limited":
      return `The registry is limiting pulls right now; try again later or log in to the registry (${m})`;
    case "dependency_missing":
      return `This server cannot pull images: ${m}`;
    case "unreachable":
      return `Cannot reach the server to pull ${image}. ${capitalize(m)}`;
  }
  return `Could not pull ${image}: ${m} (${problem.code})`;
}

// ---- What will run ----

/** An image's own start command, as `GET /images/{name}` reports it. */
export interface ImageCommand {
  entrypoint?: string[] | null;
  cmd?: string[] | null;
}

/**
 * The argv an instance runs, with Docker's rules (and the engine's, `resolve_argv`): an
 * Entrypoint override drops the image's Cmd; a Command replaces the image's Cmd. `image` null:
 * not known yet, so the argv is known only when the Entrypoint is overridden.
 */
export function willRun(image: ImageCommand | null, entrypoint: string[], cmd: string[]): string[] | null {
  if (entrypoint.length) return [...entrypoint, ...cmd];
  if (!image) return null;
  return [...(image.entrypoint ?? []), ...(cmd.length ? cmd : (image.cmd ?? []))];
}

const SHELLS = new Set(["sh", "bash", "ash", "dash", "zsh", "ksh"]);

/**
 * What looks wrong in an argv, in a sentence; null when nothing does. The usual trap: a shell's
 * `-c` runs only the next word, so `/bin/sh -c sh -c 'echo hi'` (an image Entrypoint of
 * `/bin/sh -c` plus a Command of `sh -c '…'`) starts an idle shell.
 */
export function argvWarning(argv: string[]): string | null {
  if (argv.length === 0) return "Nothing to run: the image has no Entrypoint or Cmd. Give a Command.";
  const shell = argv[0]!.split("/").pop()!;
  const script = argv[2] ?? "";
  // `sh -c 'a script' name args` is fine; a one-word script with more words after it is the trap.
  if (SHELLS.has(shell) && argv[1] === "-c" && argv.length > 3 && !/\s/.test(script)) {
    const idle = SHELLS.has(script.split("/").pop()!);
    const rest = idle ? argv.slice(argv[3] === "-c" ? 4 : 3) : argv.slice(2);
    const fix = rest.length ? ` Write the Command as one quoted word: ${shellQuote([rest.join(" ")])}.` : "";
    return `${argv[0]} -c runs only ${JSON.stringify(script)}; the words after it become its $0, $1…${idle ? ", so this starts an idle shell" : ""}.${fix}`;
  }
  return null;
}

/** Words as a shell would need them typed: plain words as they are, others in single quotes. */
export function shellQuote(words: readonly string[]): string {
  return words.map((w) => (w !== "" && /^[A-Za-z0-9_@%+=:,./-]+$/.test(w) ? w : `'${w.replace(/'/g, `'\\''`)}'`)).join(" ");
}

// ---- Volumes ----

/** What the new-volume form holds; `archive` is the chosen `.tar.gz` (name and type only here). */
export interface VolumeDraft {
  name: string;
  /** Whole gigabytes; for an archive, the most its content may take. */
  sizeGb: string;
  archive: { name: string; type: string } | null;
}

/**
 * The name and size to send for a new volume (the same for `volumes.create` and
 * `volumes.createFromArchive`), or the mistake to show next to the form.
 */
export function buildVolumeParams(draft: VolumeDraft): { params: Hypeman.VolumeCreateParams | null; error: string | null } {
  const name = draft.name.trim();
  if (name === "") return { params: null, error: "Give the volume a name" };
  const text = draft.sizeGb.trim();
  const size = Number(text);
  if (text === "" || !Number.isInteger(size) || size < 1) return { params: null, error: "The size is a whole number of GB, 1 or more" };
  const a = draft.archive;
  if (a && !/\.(?:tar\.gz|tgz)$/i.test(a.name) && !/gzip/.test(a.type)) {
    return { params: null, error: `${a.name} is not a .tar.gz archive` };
  }
  return { params: { name, size_gb: size }, error: null };
}

// ---- Rotation ----

/**
 * The keys a PATCH may change, from upstream's 400 text
 * `"… are not credential source env vars; allowed keys: [A B]"`; `[]` when the instance has no
 * credential-backed env vars; null when the text says neither.
 */
export function allowedKeysFrom(problem: Problem): string[] | null {
  if (/no credential-backed env vars/.test(problem.message)) return [];
  const m = /allowed keys: \[([^\]]*)\]/.exec(problem.message);
  if (!m) return null;
  return m[1]!.split(/\s+/).filter((k) => k !== "");
}

/**
 * The probe that asks the API which keys rotate, without changing anything: an unknown key
 * with an empty value. The key check (400 with the allowed list) comes before the state check,
 * and if the probe key were somehow allowed, the empty value is refused after the merge, so the
 * request is always rejected whole (hypeman-semantics §6.5).
 */
export const PROBE_KEY = "HYPEDECK_ROTATION_PROBE";
export const PROBE_BODY = { env: { [PROBE_KEY]: "" } } as const;

/**
 * `KEY=value` pairs pasted into the rotation form: the values for `keys`, and the other keys
 * (sent anyway, so the API's 400 names the allowed ones). A bare value (no `=`) pasted while one
 * key exists fills that key.
 */
export function parsePaste(text: string, keys: readonly string[]): { values: Record<string, string>; unknown: string[] } {
  const trimmed = text.trim();
  if (!trimmed.includes("=") || (keys.length === 1 && !/^[A-Za-z_][A-Za-z0-9_]*=/.test(trimmed))) {
    return keys.length === 1 && trimmed !== "" ? { values: { [keys[0]!]: trimmed }, unknown: [] } : { values: {}, unknown: [] };
  }
  const { env } = parseEnvLines(text);
  const values: Record<string, string> = {};
  const unknown: string[] = [];
  for (const [k, v] of Object.entries(env)) {
    values[k] = v;
    if (!keys.includes(k)) unknown.push(k);
  }
  return { values, unknown };
}

/** The PATCH body for the filled-in values (blank fields are left as they are). */
export function rotationBody(values: Record<string, string>): { env: Record<string, string> } | null {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(values)) if (v !== "") env[k] = v;
  return Object.keys(env).length ? { env } : null;
}

/** A stored value as dots: its length and characters stay hidden until the user reveals it. */
export function mask(value: string): string {
  return value === "" ? "" : "•".repeat(10);
}
