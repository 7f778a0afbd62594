//! # adalora-study
//!
//! Studies made of many runs: a sweep file ([`spec`]) expands to runs recorded in a manifest
//! ([`manifest`]: lock-protected, atomic, shared by every process of the sweep); executors run
//! its rows ([`executor`]: claim, train or resume, record; [`slurm`]: the same rows as a Slurm
//! job array); [`report`] turns the finished runs
//! into a Table-1-style report and [`figures`] into the paper's figures.

pub mod estimate;
pub mod executor;
pub mod figures;
pub mod manifest;
pub mod report;
pub mod report_settings;
pub mod runs;
pub mod slurm;
pub mod spec;
pub mod stats;
pub mod sweep;

pub use manifest::{Manifest, Row, Status, SweepDir};
pub use spec::{PlannedRun, SweepSpec};
pub use sweep::SweepOptions;
