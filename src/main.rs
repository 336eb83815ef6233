//! The charm's only executable, installed as `dispatch`. It routes to a hook
//! or action and turns every failure into one sentence for the operator.

use std::process::ExitCode;

use etcd_charm::actions::{self, ActionContext};
use etcd_charm::dispatch::{route, Route};
use etcd_charm::juju::{HookTools, JujuEnv, LogLevel, ProcessTools};
use etcd_charm::paths::Paths;
use etcd_charm::{hooks, Error};

fn main() -> ExitCode {
    // A panic is a charm bug: report it in one line, never a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("etcd charm internal error: {msg}");
    }));
    // Whatever the charm or a tool it runs (etcdutl restore) creates is
    // private to root from the moment it exists.
    // SAFETY: umask(2) only swaps the process's file mode mask.
    unsafe {
        libc::umask(0o077);
    }
    let args: Vec<String> = std::env::args().collect();
    // The Nagios checks, run by cron outside any hook.
    if args.get(1).map(String::as_str) == Some("nagios-check") {
        let code = etcd_charm::nagios::main(&args[2..]);
        return ExitCode::from(u8::try_from(code).unwrap_or(3));
    }
    // Scheduled backups, run by the leader's systemd timer.
    if args.get(1).map(String::as_str) == Some("scheduled-backup") {
        let code = etcd_charm::schedule::run::main();
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let env = JujuEnv::from_process();
    let argv0 = args.first().cloned().unwrap_or_default();
    let tools = ProcessTools;
    let paths = Paths::from_env();
    let outcome = std::panic::catch_unwind(|| match route(&env, &argv0) {
        Route::Action(name) => run_action(&name, &tools, &paths, &env),
        Route::Hook(name) => run_hook(&name, &tools, &paths, &env),
        Route::Unknown(what) => {
            eprintln!("etcd charm: cannot tell which hook or action to run from {what:?}");
            ExitCode::from(2)
        }
    });
    outcome.unwrap_or_else(|_| {
        let msg = "the etcd charm hit an internal error; nothing further was done, see the unit log and report a bug";
        if tools.action_fail(msg).is_err() {
            let _ = tools.log(LogLevel::Error, msg);
        }
        ExitCode::from(70)
    })
}

/// A failed action is reported with `action-fail` and exit 0: Juju replaces
/// the action-fail message with "exit status N" when the process also exits
/// non-zero (uniter context `finalizeAction`), and the operator must see the
/// sentence. Only when Juju cannot be told does the exit code carry it.
fn run_action(name: &str, tools: &ProcessTools, paths: &Paths, env: &JujuEnv) -> ExitCode {
    let ctx = ActionContext {
        tools,
        paths: paths.clone(),
        env: env.clone(),
    };
    let outcome = actions::run(name, &ctx).and_then(|r| tools.action_set(&r).map_err(Error::from));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = e.to_string();
            match tools.action_fail(&msg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(fail) => {
                    eprintln!("{msg} ({fail})");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run_hook(name: &str, tools: &ProcessTools, paths: &Paths, env: &JujuEnv) -> ExitCode {
    match hooks::run(name, tools, paths, env) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{name} failed: {e}");
            if tools.log(LogLevel::Error, &msg).is_err() {
                eprintln!("{msg}");
            }
            ExitCode::FAILURE
        }
    }
}
