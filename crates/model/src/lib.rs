//! Hypeman wire and domain types.
//!
//! Pure: serde only, no I/O, no async. This crate owns
//! - the wire shapes of the API ([`Instance`], [`CreateInstanceRequest`],
//!   [`UpdateInstanceRequest`], [`ErrorBody`]) exactly as upstream Hypeman serializes them;
//! - [`InstanceState`] and its transition table;
//! - sizes and rates ([`size`]): the one place that formats `"1024.0 MB"`;
//! - validation ([`validate`]) that turns a request into typed domain values ([`spec`]), with
//!   upstream's error codes and messages;
//! - image references ([`mod@reference`]).

pub mod allow;
pub mod autostandby;
pub mod duration;
pub mod error;
pub mod id;
pub mod instance;
pub mod reclaim;
pub mod reference;
pub mod request;
pub mod schema;
pub mod size;
pub mod snapshot;
pub mod spec;
pub mod state;
pub mod stats;
pub mod validate;

pub use allow::AllowList;
pub use error::{ErrorBody, ErrorCode};
pub use id::InstanceId;
pub use instance::{
    DiskBreakdown, Health, HypervisorKind, ImageInfo, Instance, InstanceGpu, InstanceNetwork,
    PortForward, PortProtocol, ResourceAllocation, ResourceStatus, Resources, Volume,
    VolumeAttachment, VolumeMount,
};
pub use request::{
    AttachVolumeRequest, CreateInstanceRequest, CreateVolumeRequest, CredentialInject,
    CredentialInjectAs, CredentialPolicy, CredentialSource, EgressEnforcement, EgressRequest,
    GpuRequest, NetworkRequest, PortMapping, UpdateInstanceRequest,
};
pub use snapshot::{
    CreateSnapshotRequest, ForkInstanceRequest, ForkOrigin, ForkSnapshotRequest,
    RestoreSnapshotRequest, SetSnapshotScheduleRequest, Snapshot, SnapshotKind, SnapshotRetention,
    SnapshotRetentionRequest, SnapshotSchedule, SnapshotTargetState, StandbyInstanceRequest,
};
pub use spec::{EgressMode, InstanceSpec, NetworkSpec};
pub use state::{InstanceState, TransitionError};
pub use stats::{FleetStats, InstanceStats, StatsHistory, StatsSample};
pub use validate::Rejection;

#[cfg(test)]
mod seed_tests;
