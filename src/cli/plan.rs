//! `cairn plan validate`: finds the plan file, reports every mistake in it with
//! its line and column, and summarises the classes of a plan without mistakes.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};

use cairn::plan::{self, Class, Origin, Plan, Problem, Severity, Sources};

use super::GlobalArgs;
use super::output::{self, count};

#[derive(Args)]
pub struct PlanCmd {
    /// The plan file [default: $CAIRN_PLAN, else the first of ./cairn.toml,
    /// ~/.config/cairn/cairn.toml, /etc/cairn/cairn.toml that exists]
    #[arg(long, value_name = "FILE", global = true)]
    plan: Option<PathBuf>,
    #[command(subcommand)]
    command: PlanSub,
}

#[derive(Subcommand)]
enum PlanSub {
    /// Check the plan file and report every mistake in it, with its line and
    /// column; exits 1 if there is any
    Validate,
}

pub fn run(g: &GlobalArgs, a: PlanCmd) -> Result<ExitCode> {
    match a.command {
        PlanSub::Validate => validate(g, a.plan),
    }
}

fn validate(g: &GlobalArgs, flag: Option<PathBuf>) -> Result<ExitCode> {
    let env = std::env::var_os("CAIRN_PLAN").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let (path, origin) = plan::locate(flag.as_deref(), env.as_deref(), home.as_deref())?;
    let report =
        plan::load(&path).with_context(|| format!("reading plan file {}", path.display()))?;
    let shown = output::path(&path);
    for p in &report.problems {
        if g.json {
            let mut v = serde_json::to_value(p)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("message_type".into(), "plan_problem".into());
                o.insert("file".into(), path.to_string_lossy().into());
            }
            output::print_json(&v)?;
        } else if p.severity == Severity::Error || !g.quiet {
            eprintln!("{}", problem_line(&shown, p));
        }
    }
    let (errors, warnings) = (report.errors(), report.warnings());
    if g.json {
        output::print_json(&serde_json::json!({
            "message_type": "summary", "command": "plan validate",
            "file": path.to_string_lossy(), "origin": origin,
            "errors": errors, "warnings": warnings,
            "classes": report.plan.as_ref().map(classes_json),
        }))?;
    } else if let (Some(p), false) = (&report.plan, g.quiet) {
        print_summary(&shown, origin, p, warnings);
    }
    match report.plan {
        Some(_) => Ok(ExitCode::SUCCESS),
        None => Err(anyhow!(
            "plan file {shown} has {}{}",
            count(errors, "mistake", "mistakes"),
            if warnings > 0 {
                format!(" and {}", count(warnings, "warning", "warnings"))
            } else {
                String::new()
            }
        )),
    }
}

fn problem_line(file: &str, p: &Problem) -> String {
    let level = match p.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    };
    format!(
        "{file}:{}:{}: {level}: {}",
        p.line,
        p.column,
        output::printable(&p.message)
    )
}

fn origin_text(origin: Origin) -> &'static str {
    match origin {
        Origin::Flag => "given by --plan",
        Origin::Env => "given by CAIRN_PLAN",
        Origin::Default => "the first default location that exists",
    }
}

fn sources_text(c: &Class) -> String {
    match &c.sources {
        Sources::Paths(p) => p
            .iter()
            .map(|p| output::path(p))
            .collect::<Vec<_>>()
            .join(", "),
        Sources::Command {
            command,
            stdin_filename,
        } => format!(
            "output of `{}` as {}",
            output::printable(command),
            output::printable(stdin_filename)
        ),
    }
}

fn print_summary(file: &str, origin: Origin, p: &Plan, warnings: usize) {
    println!("plan {file} ({}) is valid", origin_text(origin));
    println!(
        "{}, {}{}",
        count(p.classes.len(), "class", "classes"),
        count(p.repositories.len(), "repository", "repositories"),
        if warnings > 0 {
            format!(", {}", count(warnings, "warning", "warnings"))
        } else {
            String::new()
        }
    );
    for c in &p.classes {
        let copies = if c.copy_to.is_empty() {
            String::new()
        } else {
            format!(", copied to {}", output::printable(&c.copy_to.join(", ")))
        };
        println!(
            "  {}: {} every {} into {}{copies}",
            output::printable(&c.name),
            sources_text(c),
            c.every,
            output::printable(&c.repository),
        );
    }
}

fn classes_json(p: &Plan) -> serde_json::Value {
    let list: Vec<serde_json::Value> = p
        .classes
        .iter()
        .map(|c| {
            let sources = match &c.sources {
                Sources::Paths(p) => serde_json::json!({
                    "paths": p.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>()
                }),
                Sources::Command {
                    command,
                    stdin_filename,
                } => serde_json::json!({ "command": command, "stdin_filename": stdin_filename }),
            };
            serde_json::json!({
                "name": c.name, "sources": sources, "every": c.every.to_string(),
                "every_seconds": c.every.0.as_secs(), "repository": c.repository,
                "copy_to": c.copy_to,
            })
        })
        .collect();
    serde_json::Value::Array(list)
}
