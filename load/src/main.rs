//! `ringgate-load` binary: parse the command line, run the load (or draw a plot), print the
//! table, write the requested files, and choose the exit status.
//!
//! Exit status: 0 on success; 1 if `--fail-on-error` was given and any error, non-2xx
//! response or unfinished request occurred; 2 for usage or I/O problems.

use std::fs::File;
use std::io::BufWriter;
use std::process::ExitCode;

use clap::Parser;

use ringgate_load::cli::{Cli, Command, PlotArgs, RunArgs};
use ringgate_load::plot::{draw_svg, load_series, Series};
use ringgate_load::report::write_hgrm;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Plot(args)) => plot(&args),
        Some(Command::Run(args)) => run(&args),
        None => run(&cli.run),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("ringgate-load: {message}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &RunArgs) -> Result<ExitCode, String> {
    let config = args.to_config()?;
    let outcome = ringgate_load::run(&config)?;
    let report = outcome.report();
    print!("{}", report.render_table());

    if let Some(path) = &args.hgrm {
        let file = File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        write_hgrm(&outcome.stats.corrected, &mut BufWriter::new(file))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.json {
        std::fs::write(path, report.to_json() + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        let mut series = vec![Series {
            name: report.label.clone(),
            points: report.curve.clone(),
        }];
        if let Some(uncorrected) = &report.uncorrected_latency_us {
            if uncorrected.count > 0 {
                series.push(Series {
                    name: format!("{} (uncorrected)", report.label),
                    points: ringgate_load::report::percentile_curve(&outcome.stats.uncorrected),
                });
            }
        }
        let title = format!("Latency by percentile: {}", report.target);
        draw_svg(path, &title, &series, false)?;
    }
    if args.fail_on_error && report.has_failures() {
        eprintln!(
            "ringgate-load: failing (--fail-on-error): {} errors, {} non-2xx, {} unfinished",
            report.requests.errors, report.requests.non_2xx, report.requests.unfinished
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn plot(args: &PlotArgs) -> Result<ExitCode, String> {
    let series = args
        .inputs
        .iter()
        .map(|spec| load_series(spec, args.hgrm_unit))
        .collect::<Result<Vec<_>, _>>()?;
    draw_svg(&args.out, &args.title, &series, args.log_y)?;
    println!("wrote {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}
