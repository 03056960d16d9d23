//! The integration tests: one binary, a module per area (as ripgrep does), one `common`.

mod common;

mod architecture;
mod backends;
mod bad_input;
mod bash_fallback;
mod demo_scenarios;
mod edge_gates;
mod exec_round_trips;
mod fleet;
mod generation_2026;
mod host_vantage;
mod hostile;
mod identity;
mod injection;
mod lint_cli;
mod parsers_prop;
mod prometheus_format;
mod pve_api;
mod real_caddy;
mod retries;
mod secrets;
mod selection;
mod serve_cache;
mod state;
mod ux;
mod verdict_trust;
