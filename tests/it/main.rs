//! orgsplit's integration tests, as one test binary: each module is one
//! area, run against the real binary or an in-process server on a real TCP
//! port (see docs/contributing.md). One binary links the crate once, where
//! one binary per file linked it twenty times.

mod common;

mod auth;
mod bounds;
mod cli;
mod coalesce;
mod deploy;
mod docs;
mod e2e_faults;
mod e2e_prometheus;
mod e2e_replicas;
mod fixtures;
mod hostile;
mod kube;
mod layers;
mod loki;
mod ops;
mod otlp;
mod properties;
mod push;
mod readproxy;
mod rw2;
mod shutdown;
mod table_file;
mod ui;
