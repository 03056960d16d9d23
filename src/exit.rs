//! Exit codes: a stable contract (docs/diagnosis.md, README), shared by every command.

pub const OK: u8 = 0;
pub(crate) const BROKEN: u8 = 1;
pub const USAGE: u8 = 2;
pub(crate) const INCONCLUSIVE: u8 = 3;
