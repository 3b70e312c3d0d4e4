// Pure form logic: the create form → an `InstanceCreateParams` body (with the mistakes we can
// see before sending), API errors → the field they belong to, the new-volume form, and the
// rotation form (which keys rotate, paste parsing, what to send). Vitest covers all of it
// (forms.test.ts).
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
    tags[key] = eq < 0 ? "" : item.slice(eq + 1).trim();
  }
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
  if (image === "") errors.image = "Choose an image, e.g. docker.io/library/alpine:latest";
  if (name === "") errors.name = "Give the instance a name";

  let vcpus: number | undefined;
  if (draft.vcpus.trim() !== "") {
    vcpus = Number(draft.vcpus);
    if (!Number.isInteger(vcpus) || vcpus < 1) errors.vcpus = "A whole number of vCPUs, 1 or more";
  }
  const memory = draft.memory.trim().replace(/\s+/g, "");
  const cmd = shellWords(draft.cmd);
  if (cmd.error) errors.cmd = cmd.error;

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
    const field: Field = `credentials.${i}`;
    if (!ENV_NAME.test(key)) {
      errors[field] = "The env var name the guest sees, e.g. OPENAI_API_KEY";
    } else if (key in credentials) {
      errors[field] = `${key} is declared twice`;
    } else if (!ENV_NAME.test(source)) {
      errors[field] = "The source env var must be a valid variable name";
    } else if (c.value.trim() === "" && !(source in env)) {
      errors[field] = "Paste the real value; the guest only ever sees a mock";
    } else if (!c.format.includes("${value}")) {
      errors[field] = "The format must contain ${value}";
    } else if (c.header.trim() === "") {
      errors[field] = "Which header carries the credential, e.g. Authorization";
    }
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
  const credential = /credentials\["([^"]*)"\]/.exec(m);
  if (credential) {
    const i = draft.credentials.findIndex((c) => c.key.trim() === credential[1]);
    return i >= 0 ? `credentials.${i}` : "form";
  }
  const schemaField = /Error at "\/([a-z_]+)/.exec(m)?.[1];
  const word = schemaField ?? /\b(image|name|vcpus|size|memory|cmd|env|tags|network|credentials)\b/.exec(m)?.[1];
  switch (word) {
    case "image":
    case "name":
    case "cmd":
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
