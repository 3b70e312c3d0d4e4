//! One module per resource.

pub mod images;
pub mod instances;
pub mod lifecycle;
pub mod meta;
