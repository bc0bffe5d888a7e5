//! Shared benchmark inputs.
#![allow(dead_code)]
pub mod events;
pub mod sensor;
