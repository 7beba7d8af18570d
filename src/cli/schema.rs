//! `guestprep schema`: prints the report's JSON Schema (the committed docs/report.schema.json).

use anyhow::Result;

use crate::exit::ExitCode;

pub fn run() -> Result<ExitCode> {
    print!("{}", crate::report::json_schema());
    Ok(ExitCode::Ok)
}
