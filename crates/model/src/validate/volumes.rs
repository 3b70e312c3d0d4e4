//! Volume mounts: the device budget, mount paths and overlay rules.

use std::collections::BTreeSet;

use super::Rejection;
use crate::instance::VolumeMount;

/// The most block devices volumes may take (an overlay volume takes two).
const MAX_VOLUME_DEVICES: usize = 23;

/// Checks every mount (the device budget first, then each mount in order) and returns them.
pub(super) fn check_volumes(mounts: &[VolumeMount]) -> Result<Vec<VolumeMount>, Rejection> {
    let devices: usize = mounts
        .iter()
        .map(|v| if v.overlay == Some(true) { 2 } else { 1 })
        .sum();
    if devices > MAX_VOLUME_DEVICES {
        return Err(Rejection::invalid_request(
            "cannot attach more than 23 volume devices per instance (overlay volumes count as 2)",
        ));
    }
    let mut mount_paths = BTreeSet::new();
    for v in mounts {
        check_volume(v, &mut mount_paths)?;
    }
    Ok(mounts.to_vec())
}

/// Checks `new` as one more mount after `existing` (valid already): the device budget, its
/// path's rules, and a path no other mount has.
pub fn check_attachment(existing: &[VolumeMount], new: &VolumeMount) -> Result<(), Rejection> {
    let mut all = existing.to_vec();
    all.push(new.clone());
    check_volumes(&all).map(|_| ())
}

const SYSTEM_DIRS: [&str; 15] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin",
    "/sys", "/tmp", "/usr", "/var",
];

/// Volume rules (upstream answers these with a 500; Hypedeck answers 400 `invalid_request`
/// with upstream's message text).
fn check_volume(v: &VolumeMount, seen: &mut BTreeSet<String>) -> Result<(), Rejection> {
    let id = &v.volume_id;
    if id.trim().is_empty() {
        return Err(Rejection::invalid_request("volume_id is required"));
    }
    if id.starts_with("volumes-") {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: volume IDs with the prefix \"volumes-\" are reserved for internal use"
        )));
    }
    let path = &v.mount_path;
    if !path.starts_with('/') {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: mount path {path:?} must be absolute"
        )));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: mount path {path:?} must not contain '..'"
        )));
    }
    let clean = path.trim_end_matches('/');
    let clean = if clean.is_empty() { "/" } else { clean };
    if SYSTEM_DIRS.contains(&clean) {
        return Err(Rejection::invalid_request(format!(
            "volume {id}: cannot mount to system directory {clean:?}"
        )));
    }
    if !seen.insert(clean.to_string()) {
        return Err(Rejection::invalid_request(format!(
            "duplicate mount path {clean:?}"
        )));
    }
    if v.overlay == Some(true) {
        if v.readonly != Some(true) {
            return Err(Rejection::invalid_request(format!(
                "volume {id}: overlay mode requires readonly=true"
            )));
        }
        if v.overlay_size.as_deref().is_none_or(str::is_empty) {
            return Err(Rejection::invalid_request(format!(
                "volume {id}: overlay_size is required when overlay=true"
            )));
        }
    }
    Ok(())
}
