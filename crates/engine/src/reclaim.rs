//! Memory back to the laptop (issue 23): upstream's `POST /resources/memory/reclaim`.
//!
//! Every QEMU VM has a virtio balloon with free page reporting (`hv-qemu`): pages the guest
//! frees go back to the host on their own, and a reclaim inflates balloons so guests give more
//! back through their own LRU. The plan is upstream's (`lib/guestmemory/planner.go`): each
//! running VM with a balloon may give up to its RAM minus a protected floor (the larger of
//! half its RAM and 512 MiB); the requested total is shared in proportion to those headrooms;
//! one call moves a VM by at most 256 MiB, and changes under 64 MiB are skipped. The reclaim
//! holds for `hold_for` (default 5m, at most 1h); after it the reconciler
//! (`reconcile_memory`, every 2 s) deflates the balloons back, a step at a time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypedeck_model::reclaim::{MemoryReclaimAction, MemoryReclaimRequest, MemoryReclaimResponse};
use hypedeck_model::{ErrorCode, InstanceState};
use time::OffsetDateTime;

use crate::{Engine, EngineError, lock, rejected};

const FLOOR_PERCENT: u64 = 50;
const FLOOR_MIN: u64 = 512 << 20;
const MIN_ADJUSTMENT: u64 = 64 << 20;
const MAX_STEP: u64 = 256 << 20;
const DEFAULT_HOLD: Duration = Duration::from_secs(300);
const MAX_HOLD: Duration = Duration::from_secs(3600);
/// How often the reconciler looks.
pub const RECONCILE: Duration = Duration::from_secs(2);

/// The manual hold in force.
#[derive(Debug, Default)]
pub(crate) struct Reclaim {
    hold: Mutex<Option<(u64, OffsetDateTime)>>,
    /// VMs whose balloon the engine moved (the reconciler deflates only those).
    ballooned: Mutex<HashMap<String, ()>>,
}

struct Candidate {
    id: String,
    name: String,
    hypervisor: String,
    vm: Arc<dyn hypedeck_hypervisor::Vm>,
    assigned: u64,
    current: u64,
    floor: u64,
    headroom: u64,
}

/// Upstream's proportional plan: for VMs of `(assigned, headroom)`, each one's target guest
/// memory when `total` is reclaimed.
fn plan(vms: &[(u64, u64)], total: u64) -> Vec<u64> {
    let mut targets: Vec<u64> = vms.iter().map(|(assigned, _)| *assigned).collect();
    let headroom: u64 = vms.iter().map(|(_, h)| *h).sum();
    if headroom == 0 {
        return targets;
    }
    let total = total.min(headroom);
    let mut remainder = total;
    for (i, (assigned, room)) in vms.iter().enumerate() {
        let share = ((u128::from(total) * u128::from(*room)) / u128::from(headroom)) as u64;
        let share = share.min(*room);
        targets[i] = assigned - share;
        remainder -= share;
    }
    for (i, (assigned, room)) in vms.iter().enumerate() {
        if remainder == 0 {
            break;
        }
        let extra = (room - (assigned - targets[i])).min(remainder);
        targets[i] -= extra;
        remainder -= extra;
    }
    targets
}

/// One step from `current` toward `planned`, within `[floor, assigned]`.
fn step(current: u64, planned: u64, floor: u64, assigned: u64) -> u64 {
    if current.abs_diff(planned) < MIN_ADJUSTMENT {
        return current;
    }
    let next = if planned > current {
        current + (planned - current).min(MAX_STEP)
    } else {
        current - (current - planned).min(MAX_STEP)
    };
    next.clamp(floor, assigned)
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Engine {
    async fn balloon_candidates(&self) -> (Vec<Candidate>, Vec<MemoryReclaimAction>) {
        let mut candidates = Vec::new();
        let mut skipped = Vec::new();
        for id in self.runtime.running_ids() {
            let (Some(vm), Ok(Some(mut record))) = (self.runtime.vm(&id), self.records.get(&id))
            else {
                continue;
            };
            if self.observe(&mut record).await.state != InstanceState::Running {
                continue;
            }
            let assigned = record.memory_bytes;
            let floor = (assigned * FLOOR_PERCENT / 100)
                .max(FLOOR_MIN)
                .min(assigned);
            let action = |status: &str, error: &str| MemoryReclaimAction {
                instance_id: record.id.clone(),
                instance_name: record.name.clone(),
                hypervisor: record.hypervisor.as_str().to_string(),
                assigned_memory_bytes: int(assigned),
                protected_floor_bytes: int(floor),
                previous_target_guest_memory_bytes: int(assigned),
                planned_target_guest_memory_bytes: int(assigned),
                target_guest_memory_bytes: int(assigned),
                applied_reclaim_bytes: 0,
                status: status.into(),
                error: Some(error.into()),
            };
            match vm.memory_target().await {
                Some(current) => candidates.push(Candidate {
                    id: record.id.clone(),
                    name: record.name.clone(),
                    hypervisor: record.hypervisor.as_str().to_string(),
                    vm,
                    assigned,
                    current: current.min(assigned),
                    floor,
                    headroom: assigned - floor,
                }),
                None => skipped.push(action(
                    "unsupported",
                    "runtime balloon control is not supported",
                )),
            }
        }
        (candidates, skipped)
    }

    /// Upstream's `POST /resources/memory/reclaim`.
    pub async fn reclaim_memory(
        &self,
        request: MemoryReclaimRequest,
    ) -> Result<MemoryReclaimResponse, EngineError> {
        let bad = |m: &str| rejected(ErrorCode::BadRequest, m);
        let hold_for = match request.hold_for.as_deref() {
            None => DEFAULT_HOLD,
            Some(text) => match hypedeck_model::duration::parse_signed(text) {
                None => return Err(bad("hold_for must be a valid duration")),
                Some(d) if d.negative && !d.magnitude.is_zero() => {
                    return Err(bad("hold_for must be non-negative"));
                }
                Some(d) if d.magnitude > MAX_HOLD => {
                    return Err(bad("hold_for must be less than or equal to 1h"));
                }
                Some(d) => d.magnitude,
            },
        };
        let requested = u64::try_from(request.reclaim_bytes)
            .map_err(|_| bad("reclaim_bytes must be non-negative"))?;
        let dry_run = request.dry_run.unwrap_or(false);
        let now = OffsetDateTime::now_utc();
        let hold_until = if dry_run {
            lock(&self.reclaim.hold).map(|(_, until)| until)
        } else if hold_for.is_zero() {
            *lock(&self.reclaim.hold) = None;
            None
        } else {
            let until = now + time::Duration::try_from(hold_for).unwrap_or_default();
            *lock(&self.reclaim.hold) = Some((requested, until));
            Some(until)
        };
        tracing::info!(
            requested,
            dry_run,
            reason = request.reason.as_deref().unwrap_or(""),
            "memory reclaim requested"
        );
        let (candidates, skipped) = self.balloon_candidates().await;
        let shape: Vec<(u64, u64)> = candidates
            .iter()
            .map(|c| (c.assigned, c.headroom))
            .collect();
        let targets = plan(&shape, requested);
        let (total, available) = crate::resources::host_memory();
        let mut response = MemoryReclaimResponse {
            requested_reclaim_bytes: request.reclaim_bytes,
            planned_reclaim_bytes: 0,
            applied_reclaim_bytes: 0,
            hold_until,
            host_available_bytes: int(available),
            host_pressure_state: if total > 0 && available * 10 < total {
                "pressure".into()
            } else {
                "healthy".into()
            },
            actions: skipped,
        };
        for (c, planned) in candidates.iter().zip(targets) {
            let planned = planned.clamp(c.floor, c.assigned);
            let next = step(c.current, planned, c.floor, c.assigned);
            let mut action = MemoryReclaimAction {
                instance_id: c.id.clone(),
                instance_name: c.name.clone(),
                hypervisor: c.hypervisor.clone(),
                assigned_memory_bytes: int(c.assigned),
                protected_floor_bytes: int(c.floor),
                previous_target_guest_memory_bytes: int(c.current),
                planned_target_guest_memory_bytes: int(planned),
                target_guest_memory_bytes: int(c.current),
                applied_reclaim_bytes: 0,
                status: "unchanged".into(),
                error: None,
            };
            response.planned_reclaim_bytes += int(c.assigned - planned);
            if next != c.current {
                if dry_run {
                    action.status = "planned".into();
                    action.target_guest_memory_bytes = int(next);
                } else {
                    match c.vm.set_memory_target(next).await {
                        Ok(()) => {
                            lock(&self.reclaim.ballooned).insert(c.id.clone(), ());
                            action.status = "applied".into();
                            action.target_guest_memory_bytes = int(next);
                            self.ops_log(
                                &c.id,
                                &format!(
                                    "memory reclaim: balloon target {} MiB of {} MiB",
                                    next >> 20,
                                    c.assigned >> 20
                                ),
                            );
                        }
                        Err(e) => {
                            action.status = "error".into();
                            action.error = Some(e.to_string());
                        }
                    }
                }
            }
            if !dry_run {
                action.applied_reclaim_bytes =
                    action.assigned_memory_bytes - action.target_guest_memory_bytes;
            }
            response.applied_reclaim_bytes += action.applied_reclaim_bytes;
            response.actions.push(action);
        }
        Ok(response)
    }

    /// Once the hold ends, deflates the balloons the engine inflated, a step at a time.
    pub async fn reconcile_memory(&self) {
        let held = {
            let mut hold = lock(&self.reclaim.hold);
            if hold.is_some_and(|(_, until)| until <= OffsetDateTime::now_utc()) {
                *hold = None;
            }
            hold.is_some()
        };
        if held {
            return;
        }
        let ids: Vec<String> = lock(&self.reclaim.ballooned).keys().cloned().collect();
        for id in ids {
            let (Some(vm), Ok(Some(record))) = (self.runtime.vm(&id), self.records.get(&id)) else {
                lock(&self.reclaim.ballooned).remove(&id);
                continue;
            };
            let Some(current) = vm.memory_target().await else {
                lock(&self.reclaim.ballooned).remove(&id);
                continue;
            };
            let assigned = record.memory_bytes;
            if current >= assigned {
                lock(&self.reclaim.ballooned).remove(&id);
                continue;
            }
            let next = (current + MAX_STEP).min(assigned);
            if vm.set_memory_target(next).await.is_ok() && next >= assigned {
                lock(&self.reclaim.ballooned).remove(&id);
                self.ops_log(&id, "memory reclaim over: balloon deflated");
            }
        }
    }

    /// Runs [`Engine::reconcile_memory`] every [`RECONCILE`] (the daemon starts it).
    pub fn spawn_memory_reconciler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RECONCILE).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.reconcile_memory().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_shares_the_reclaim_by_headroom_and_steps_are_bounded() {
        let gib = 1u64 << 30;
        let mib = 1u64 << 20;
        // 4 GiB (floor 2 GiB) and 1 GiB (floor 512 MiB): headrooms 2 GiB and 512 MiB, 4:1.
        let vms = [(4 * gib, 2 * gib), (gib, 512 * mib)];
        assert_eq!(
            plan(&vms, 640 * mib),
            vec![4 * gib - 512 * mib, gib - 128 * mib]
        );
        // More than there is: everything down to the floors.
        assert_eq!(plan(&vms, 100 * gib), vec![2 * gib, 512 * mib]);
        // A remainder from rounding goes to the first with room left.
        let odd = [(gib, 3), (gib, 3)];
        assert_eq!(plan(&odd, 5), vec![gib - 3, gib - 2]);
        assert_eq!(plan(&[(gib, 0)], gib), vec![gib]);
        // The step: at most 256 MiB, never under the floor, moves under 64 MiB skipped.
        assert_eq!(step(gib, 0, 512 * mib, gib), gib - MAX_STEP);
        assert_eq!(step(600 * mib, 0, 512 * mib, gib), 512 * mib);
        assert_eq!(step(gib, gib - 10 * mib, 512 * mib, gib), gib);
        assert_eq!(step(512 * mib, gib, 512 * mib, gib), 512 * mib + MAX_STEP);
    }
}
