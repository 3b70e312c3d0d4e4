//! One module per resource.

pub mod instances;
pub mod meta;
