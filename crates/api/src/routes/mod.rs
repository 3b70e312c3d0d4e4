//! One module per resource.

pub mod instances;
pub mod lifecycle;
pub mod meta;
