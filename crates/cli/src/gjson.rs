//! `--transform` / `--transform-error`: the subset of GJSON path syntax (upstream's
//! `gjson.Get`) that picks a part of an answer. Written here, not a port.
//!
//! Supported:
//! - dotted keys: `network.egress.enabled` (an object's member by exact name);
//! - array indexes: `items.0`, `0.name` (a number on an array; on an object it is a key);
//! - `#`: an array's length (`volumes.#`);
//! - `#.rest`: `rest` applied to every element of an array, the results that exist collected
//!   into an array (`#.name`, `#.tags.#`);
//! - `\` escapes the next character, so `tags.app\.kind` reads the key `app.kind`.
//!
//! Not supported (a path using them matches nothing, so the whole answer is printed, as
//! upstream does for a path that matches nothing): wildcards `*` `?`, queries `#(…)`,
//! modifiers `@…`, multipaths `[…]` `{…}`, pipes `|`.

use serde_json::Value;

/// The path split into components (`\x` is `x`; `.` separates).
fn components(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            '.' => out.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    out.push(current);
    out
}

/// The part of `value` that `path` names, or `None` when it matches nothing (an empty path
/// matches nothing too).
pub fn get(value: &Value, path: &str) -> Option<Value> {
    if path.is_empty() {
        return None;
    }
    let parts = components(path);
    walk(value, &parts)
}

fn walk(value: &Value, parts: &[String]) -> Option<Value> {
    let Some((head, rest)) = parts.split_first() else {
        return Some(value.clone());
    };
    match value {
        Value::Array(items) if head == "#" => {
            if rest.is_empty() {
                return Some(Value::from(items.len()));
            }
            Some(Value::Array(
                items.iter().filter_map(|item| walk(item, rest)).collect(),
            ))
        }
        Value::Array(items) => {
            let index: usize = head.parse().ok()?;
            walk(items.get(index)?, rest)
        }
        Value::Object(map) => walk(map.get(head.as_str())?, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "name": "web",
            "network": {"egress": {"enabled": true}},
            "tags": {"app.kind": "api", "team": "core"},
            "volumes": [
                {"volume_id": "a", "mount_path": "/a", "flags": ["ro", "x"]},
                {"volume_id": "b", "mount_path": "/b", "flags": []},
                {"mount_path": "/c"}
            ],
            "0": "key zero"
        })
    }

    #[test]
    fn dotted_keys_walk_objects() {
        assert_eq!(get(&doc(), "name"), Some(json!("web")));
        assert_eq!(get(&doc(), "network.egress.enabled"), Some(json!(true)));
        assert_eq!(
            get(&doc(), "network.egress"),
            Some(json!({"enabled": true}))
        );
        assert_eq!(get(&doc(), "network.nope"), None);
        assert_eq!(get(&doc(), "name.more"), None, "a string has no members");
    }

    #[test]
    fn numbers_index_arrays_and_name_object_keys() {
        assert_eq!(get(&doc(), "volumes.1.volume_id"), Some(json!("b")));
        assert_eq!(get(&doc(), "volumes.3"), None);
        assert_eq!(get(&doc(), "volumes.x"), None);
        assert_eq!(get(&doc(), "0"), Some(json!("key zero")));
        assert_eq!(get(&json!([10, 20]), "1"), Some(json!(20)));
    }

    #[test]
    fn hash_counts_and_maps() {
        assert_eq!(get(&doc(), "volumes.#"), Some(json!(3)));
        assert_eq!(
            get(&doc(), "volumes.#.volume_id"),
            Some(json!(["a", "b"])),
            "elements without the key are left out"
        );
        assert_eq!(get(&doc(), "volumes.#.flags.#"), Some(json!([2, 0])));
        assert_eq!(get(&doc(), "volumes.#.flags.0"), Some(json!(["ro"])));
        assert_eq!(get(&json!([]), "#"), Some(json!(0)));
        assert_eq!(get(&doc(), "network.#"), None, "an object has no length");
    }

    #[test]
    fn backslash_escapes_a_dot() {
        assert_eq!(get(&doc(), "tags.app\\.kind"), Some(json!("api")));
        assert_eq!(get(&doc(), "tags.app.kind"), None);
        assert_eq!(components("a\\.b.c\\\\d"), vec!["a.b", "c\\d"]);
    }

    #[test]
    fn an_empty_path_matches_nothing() {
        assert_eq!(get(&doc(), ""), None);
        assert_eq!(get(&doc(), "*"), None, "wildcards are not supported");
    }
}
