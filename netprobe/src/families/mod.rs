//! The failure families: modes, their classification and catalogue.

pub mod catalogue;
pub mod classify;
