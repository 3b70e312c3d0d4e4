//! A small JSON-schema checker for request bodies, producing the same first error (and the
//! same text) as upstream's OpenAPI validator (kin-openapi): properties are visited in sorted
//! key order, `required` is checked after them, and only the first error is reported.
//!
//! Only the keywords the spec's request schemas use are supported.

use serde_json::Value;

use crate::validate::{
    NAME_PATTERN, PLATFORM_PATTERN, Rejection, TAG_KEY_PATTERN, TAG_VALUE_PATTERN,
};

/// A string pattern: a predicate and the regular expression text reported on failure.
#[derive(Debug, Clone, Copy)]
pub struct Pattern {
    /// Whether a value matches.
    pub matches: fn(&str) -> bool,
    /// The pattern as the spec spells it.
    pub text: &'static str,
}

/// The subset of JSON schema the request bodies need.
#[derive(Debug, Clone)]
pub enum Schema {
    /// Anything (schemas this build keeps verbatim).
    Any,
    /// A boolean.
    Bool,
    /// An integer, optionally bounded (`minimum`, `maximum`).
    Int {
        /// `minimum`.
        min: Option<i64>,
        /// `maximum`.
        max: Option<i64>,
    },
    /// A string with optional constraints.
    Str {
        /// `maxLength`.
        max_len: Option<usize>,
        /// `pattern`.
        pattern: Option<Pattern>,
        /// `enum`.
        one_of: Option<&'static [&'static str]>,
    },
    /// An array.
    Array {
        /// Item schema.
        items: Box<Schema>,
        /// `minItems`.
        min_items: usize,
    },
    /// An object.
    Object {
        /// Declared properties (visited in sorted order).
        properties: Vec<(&'static str, Schema)>,
        /// `required`.
        required: &'static [&'static str],
        /// `additionalProperties` schema for undeclared keys (`None` = accept anything).
        additional: Option<Box<Schema>>,
        /// `minProperties`.
        min_properties: Option<usize>,
        /// `maxProperties`.
        max_properties: Option<usize>,
        /// Pattern every property name must match.
        key_pattern: Option<Pattern>,
    },
}

fn int() -> Schema {
    Schema::Int {
        min: None,
        max: None,
    }
}

fn int_range(min: i64, max: Option<i64>) -> Schema {
    Schema::Int {
        min: Some(min),
        max,
    }
}

fn string() -> Schema {
    Schema::Str {
        max_len: None,
        pattern: None,
        one_of: None,
    }
}

fn string_enum(values: &'static [&'static str]) -> Schema {
    Schema::Str {
        max_len: None,
        pattern: None,
        one_of: Some(values),
    }
}

fn object(properties: Vec<(&'static str, Schema)>, required: &'static [&'static str]) -> Schema {
    Schema::Object {
        properties,
        required,
        additional: None,
        min_properties: None,
        max_properties: None,
        key_pattern: None,
    }
}

/// An instance's or a snapshot's name: at most 63 of `[a-z0-9-]`, no dash at either end.
fn name() -> Schema {
    Schema::Str {
        max_len: Some(63),
        pattern: Some(Pattern {
            matches: crate::validate::is_valid_name_pattern,
            text: NAME_PATTERN,
        }),
        one_of: None,
    }
}

fn map_of(values: Schema) -> Schema {
    Schema::Object {
        properties: vec![],
        required: &[],
        additional: Some(Box::new(values)),
        min_properties: None,
        max_properties: None,
        key_pattern: None,
    }
}

fn array(items: Schema) -> Schema {
    Schema::Array {
        items: Box::new(items),
        min_items: 0,
    }
}

fn tags() -> Schema {
    Schema::Object {
        properties: vec![],
        required: &[],
        additional: Some(Box::new(Schema::Str {
            max_len: Some(256),
            pattern: Some(Pattern {
                matches: is_tag_value,
                text: TAG_VALUE_PATTERN,
            }),
            one_of: None,
        })),
        min_properties: None,
        max_properties: Some(50),
        key_pattern: Some(Pattern {
            matches: is_tag_key,
            text: TAG_KEY_PATTERN,
        }),
    }
}

fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " _.:/=+@-".contains(c)
}

fn is_tag_key(key: &str) -> bool {
    let len = key.chars().count();
    (1..=128).contains(&len) && key.chars().all(is_tag_char)
}

fn is_tag_value(value: &str) -> bool {
    value.chars().all(is_tag_char)
}

/// Checks one `tags[key]=value` pair of a list filter against the `Tags` schema; the error
/// is the validator's text after `parameter "tags" in query has an error: `.
pub fn check_tag_filter(key: &str, value: &str) -> Result<(), String> {
    if !is_tag_key(key) {
        return Err(format!(
            "property name {key:?} doesn't match the regular expression \"{TAG_KEY_PATTERN}\""
        ));
    }
    if value.chars().count() > 256 {
        return Err(format!("property {key:?}: maximum string length is 256"));
    }
    if !is_tag_value(value) {
        return Err(format!(
            "property {key:?}: string doesn't match the regular expression \"{TAG_VALUE_PATTERN}\""
        ));
    }
    Ok(())
}

/// `#/components/schemas/SnapshotCompressionConfig`.
fn snapshot_compression() -> Schema {
    object(
        vec![
            ("algorithm", string_enum(&["zstd", "lz4"])),
            ("enabled", Schema::Bool),
            ("level", int_range(0, Some(19))),
        ],
        &["enabled"],
    )
}

/// `#/components/schemas/SnapshotPolicy`.
fn snapshot_policy() -> Schema {
    object(
        vec![
            ("compression", snapshot_compression()),
            ("standby_compression_delay", string()),
        ],
        &[],
    )
}

/// `#/components/schemas/AutoStandbyPolicy`.
fn auto_standby_policy() -> Schema {
    object(
        vec![
            ("enabled", Schema::Bool),
            ("idle_timeout", string()),
            ("ignore_destination_ports", array(int_range(1, Some(65535)))),
            ("ignore_source_cidrs", array(string())),
        ],
        &[],
    )
}

/// `#/components/schemas/HealthCheck`.
fn health_check() -> Schema {
    let port = || int_range(1, Some(65535));
    object(
        vec![
            (
                "exec",
                object(
                    vec![
                        (
                            "command",
                            Schema::Array {
                                items: Box::new(string()),
                                min_items: 1,
                            },
                        ),
                        ("working_dir", string()),
                    ],
                    &["command"],
                ),
            ),
            ("failure_threshold", int_range(1, None)),
            (
                "http",
                object(
                    vec![
                        ("expected_status", int_range(100, Some(599))),
                        ("path", string()),
                        ("port", port()),
                        ("scheme", string_enum(&["http", "https"])),
                    ],
                    &["port"],
                ),
            ),
            ("interval", string()),
            ("start_period", string()),
            ("success_threshold", int_range(1, None)),
            ("tcp", object(vec![("port", port())], &["port"])),
            ("timeout", string()),
            ("type", string_enum(&["none", "http", "tcp", "exec"])),
        ],
        &[],
    )
}

/// `#/components/schemas/RestartPolicy`.
fn restart_policy() -> Schema {
    object(
        vec![
            ("backoff", string()),
            ("max_attempts", int_range(0, None)),
            ("policy", string_enum(&["never", "always", "on_failure"])),
            ("stable_after", string()),
        ],
        &[],
    )
}

/// The hypervisor enum values.
pub const HYPERVISORS: &[&str] = &[
    "cloud-hypervisor",
    "firecracker",
    "qemu",
    "qemu-microvm",
    "vz",
];

fn volume_mount() -> Schema {
    object(
        vec![
            ("mount_path", string()),
            ("overlay", Schema::Bool),
            ("overlay_size", string()),
            ("readonly", Schema::Bool),
            ("volume_id", string()),
        ],
        &["volume_id", "mount_path"],
    )
}

fn credential() -> Schema {
    object(
        vec![
            (
                "inject",
                Schema::Array {
                    items: Box::new(object(
                        vec![
                            (
                                "as",
                                object(
                                    vec![("format", string()), ("header", string())],
                                    &["header", "format"],
                                ),
                            ),
                            ("hosts", array(string())),
                        ],
                        &["as"],
                    )),
                    min_items: 1,
                },
            ),
            ("source", object(vec![("env", string())], &["env"])),
        ],
        &["source", "inject"],
    )
}

/// `#/components/schemas/CreateInstanceRequest`.
pub fn create_instance_request() -> Schema {
    object(
        vec![
            ("auto_standby", auto_standby_policy()),
            ("cmd", array(string())),
            ("credentials", map_of(credential())),
            ("devices", array(string())),
            ("disk_io_bps", string()),
            ("entrypoint", array(string())),
            ("env", map_of(string())),
            ("gpu", object(vec![("profile", string())], &[])),
            ("health_check", health_check()),
            ("hotplug_size", string()),
            ("hypervisor", string_enum(HYPERVISORS)),
            ("image", string()),
            ("name", name()),
            (
                "network",
                object(
                    vec![
                        ("bandwidth_download", string()),
                        ("bandwidth_upload", string()),
                        (
                            "egress",
                            object(
                                vec![
                                    ("enabled", Schema::Bool),
                                    (
                                        "enforcement",
                                        object(
                                            vec![(
                                                "mode",
                                                string_enum(&["all", "http_https_only"]),
                                            )],
                                            &[],
                                        ),
                                    ),
                                    // Hypedeck extension.
                                    ("allow", array(string())),
                                ],
                                &[],
                            ),
                        ),
                        ("enabled", Schema::Bool),
                    ],
                    &[],
                ),
            ),
            ("overlay_size", string()),
            (
                "platform",
                Schema::Str {
                    max_len: None,
                    pattern: Some(Pattern {
                        matches: crate::validate::is_valid_platform_syntax,
                        text: PLATFORM_PATTERN,
                    }),
                    one_of: None,
                },
            ),
            (
                "ports",
                array(object(
                    vec![
                        ("guest_port", int()),
                        ("host_port", int()),
                        ("protocol", string_enum(&["tcp", "udp"])),
                    ],
                    &["host_port", "guest_port"],
                )),
            ),
            ("restart_policy", restart_policy()),
            ("size", string()),
            ("skip_guest_agent", Schema::Bool),
            ("skip_kernel_headers", Schema::Bool),
            ("snapshot_policy", snapshot_policy()),
            ("tags", tags()),
            ("vcpus", int()),
            ("volumes", array(volume_mount())),
        ],
        &["name", "image"],
    )
}

/// `#/components/schemas/UpdateInstanceRequest`.
pub fn update_instance_request() -> Schema {
    object(
        vec![
            ("auto_standby", auto_standby_policy()),
            (
                "env",
                Schema::Object {
                    properties: vec![],
                    required: &[],
                    additional: Some(Box::new(string())),
                    min_properties: Some(1),
                    max_properties: None,
                    key_pattern: None,
                },
            ),
            ("health_check", health_check()),
            ("restart_policy", restart_policy()),
            // Hypedeck extension.
            (
                "network",
                object(
                    vec![("egress", object(vec![("allow", array(string()))], &[]))],
                    &[],
                ),
            ),
        ],
        &[],
    )
}

/// The inline body schema of `POST /instances/{id}/start`.
pub fn start_instance_request() -> Schema {
    object(
        vec![("cmd", array(string())), ("entrypoint", array(string()))],
        &[],
    )
}

/// `#/components/schemas/CreateImageRequest`.
pub fn create_image_request() -> Schema {
    object(
        vec![
            (
                "credentials",
                object(
                    vec![
                        ("password", string()),
                        ("registry_token", string()),
                        ("username", string()),
                    ],
                    &[],
                ),
            ),
            ("name", string()),
            (
                "platform",
                Schema::Str {
                    max_len: None,
                    pattern: Some(Pattern {
                        matches: crate::validate::is_valid_platform_syntax,
                        text: PLATFORM_PATTERN,
                    }),
                    one_of: None,
                },
            ),
            ("tags", tags()),
        ],
        &["name"],
    )
}

/// `#/components/schemas/StandbyInstanceRequest`.
pub fn standby_instance_request() -> Schema {
    object(
        vec![
            ("compression", snapshot_compression()),
            ("compression_delay", string()),
        ],
        &[],
    )
}

/// `#/components/schemas/CreateSnapshotRequest`.
pub fn create_snapshot_request() -> Schema {
    object(
        vec![
            ("compression", snapshot_compression()),
            ("kind", string_enum(&["Standby", "Stopped"])),
            ("name", name()),
            ("tags", tags()),
        ],
        &["kind"],
    )
}

/// `#/components/schemas/RestoreSnapshotRequest`.
pub fn restore_snapshot_request() -> Schema {
    object(
        vec![
            ("target_hypervisor", hypervisor_name()),
            ("target_state", target_state()),
        ],
        &[],
    )
}

/// `#/components/schemas/ForkInstanceRequest`.
pub fn fork_instance_request() -> Schema {
    object(
        vec![
            ("from_running", Schema::Bool),
            ("name", name()),
            ("target_state", target_state()),
        ],
        &["name"],
    )
}

/// `#/components/schemas/ForkSnapshotRequest`.
pub fn fork_snapshot_request() -> Schema {
    object(
        vec![
            ("name", name()),
            ("target_hypervisor", hypervisor_name()),
            ("target_state", target_state()),
        ],
        &["name"],
    )
}

/// `#/components/schemas/MemoryReclaimRequest`.
pub fn memory_reclaim_request() -> Schema {
    object(
        vec![
            ("reclaim_bytes", int_range(0, None)),
            ("hold_for", string()),
            ("dry_run", Schema::Bool),
            (
                "reason",
                Schema::Str {
                    max_len: Some(256),
                    pattern: None,
                    one_of: None,
                },
            ),
        ],
        &["reclaim_bytes"],
    )
}

/// `#/components/schemas/SetSnapshotScheduleRequest`.
pub fn set_snapshot_schedule_request() -> Schema {
    object(
        vec![
            ("interval", string()),
            ("metadata", tags()),
            // Nullable in the spec: checked by the engine (which says what is wrong).
            ("name_prefix", Schema::Any),
            (
                "retention",
                object(
                    vec![
                        ("max_age", string()),
                        (
                            "max_count",
                            Schema::Int {
                                min: Some(0),
                                max: None,
                            },
                        ),
                    ],
                    &[],
                ),
            ),
        ],
        &["interval", "retention"],
    )
}

/// `SnapshotTargetState` / `ForkTargetState`.
fn target_state() -> Schema {
    string_enum(&["Stopped", "Standby", "Running"])
}

/// A hypervisor's name as requests give it.
fn hypervisor_name() -> Schema {
    string_enum(&[
        "cloud-hypervisor",
        "firecracker",
        "qemu",
        "qemu-microvm",
        "vz",
    ])
}

/// Checks `body` against the component schema `name`, returning upstream's first error.
pub fn check_body(name: &str, schema: &Schema, body: &Value) -> Result<(), Rejection> {
    check(schema, body, "").map_err(|(pointer, reason)| {
        let at = if pointer.is_empty() { String::new() } else { format!("Error at \"{pointer}\": ") };
        Rejection::new(
            crate::ErrorCode::SchemaViolation,
            format!("request body has an error: doesn't match schema #/components/schemas/{name}: {at}{reason}"),
        )
    })
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

fn check(schema: &Schema, value: &Value, at: &str) -> Result<(), (String, String)> {
    let fail = |reason: String| Err((at.to_string(), reason));
    match schema {
        Schema::Any => Ok(()),
        Schema::Bool => match value {
            Value::Bool(_) => Ok(()),
            _ => fail("value must be a boolean".into()),
        },
        Schema::Int { min, max } => {
            let whole = match value {
                Value::Number(n) if n.is_i64() || n.is_u64() => n.as_f64(),
                Value::Number(n) => n.as_f64().filter(|f| f.fract() == 0.0),
                _ => None,
            };
            let Some(n) = whole else {
                return fail("value must be an integer".into());
            };
            if let Some(min) = min
                && n < *min as f64
            {
                return fail(format!("number must be at least {min}"));
            }
            if let Some(max) = max
                && n > *max as f64
            {
                return fail(format!("number must be at most {max}"));
            }
            Ok(())
        }
        Schema::Str {
            max_len,
            pattern,
            one_of,
        } => {
            let Value::String(s) = value else {
                return fail("value must be a string".into());
            };
            if let Some(values) = one_of
                && !values.contains(&s.as_str())
            {
                let list: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
                return fail(format!(
                    "value is not one of the allowed values [{}]",
                    list.join(",")
                ));
            }
            if let Some(max) = max_len
                && s.chars().count() > *max
            {
                return fail(format!("maximum string length is {max}"));
            }
            if let Some(p) = pattern
                && !(p.matches)(s)
            {
                return fail(format!(
                    "string doesn't match the regular expression \"{}\"",
                    p.text
                ));
            }
            Ok(())
        }
        Schema::Array { items, min_items } => {
            let Value::Array(list) = value else {
                return fail("value must be an array".into());
            };
            if list.len() < *min_items {
                return fail(format!("minimum number of items is {min_items}"));
            }
            for (i, item) in list.iter().enumerate() {
                check(items, item, &format!("{at}/{i}"))?;
            }
            Ok(())
        }
        Schema::Object {
            properties,
            required,
            additional,
            min_properties,
            max_properties,
            key_pattern,
        } => {
            let Value::Object(map) = value else {
                return fail("value must be an object".into());
            };
            if let Some(min) = min_properties
                && map.len() < *min
            {
                return fail(format!("there must be at least {min} properties"));
            }
            if let Some(max) = max_properties
                && map.len() > *max
            {
                return fail(format!("there must be at most {max} properties"));
            }
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            for key in keys {
                let child = format!("{at}/{}", escape(key));
                if let Some(p) = key_pattern
                    && !(p.matches)(key)
                {
                    return Err((
                        at.to_string(),
                        format!(
                            "property {key:?}: string doesn't match the regular expression \"{}\"",
                            p.text
                        ),
                    ));
                }
                let value = &map[key.as_str()];
                let schema = properties
                    .iter()
                    .find(|(name, _)| name == key)
                    .map(|(_, s)| s)
                    .or(additional.as_deref());
                // No request property of upstream's spec is nullable: its validator rejects an
                // explicit null rather than reading it as absent.
                if value.is_null() && !matches!(schema, Some(Schema::Any) | None) {
                    return Err((child, "Value is not nullable".into()));
                }
                if let Some(s) = schema {
                    check(s, value, &child)?;
                }
            }
            for name in required.iter() {
                if map.get(*name).is_none_or(Value::is_null) {
                    return Err((
                        format!("{at}/{name}"),
                        format!("property {name:?} is missing"),
                    ));
                }
            }
            Ok(())
        }
    }
}

/// `#/components/schemas/CreateVolumeRequest`.
/// `AttachVolumeRequest`.
pub fn attach_volume_request() -> Schema {
    object(
        vec![("mount_path", string()), ("readonly", Schema::Bool)],
        &["mount_path"],
    )
}

pub fn create_volume_request() -> Schema {
    object(
        vec![
            ("id", string()),
            ("name", string()),
            ("size_gb", int()),
            ("tags", tags()),
        ],
        &["name", "size_gb"],
    )
}
