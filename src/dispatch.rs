//! Which hook or action this process is: `JUJU_DISPATCH_PATH` first (Juju
//! 2.8+ runs `dispatch` for everything), then `JUJU_ACTION_NAME`, then the
//! name the process was started under (`hooks/<name>`, `actions/<name>`).

use crate::juju::JujuEnv;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Hook(String),
    Action(String),
    Unknown(String),
}

fn from_path(path: &str) -> Option<Route> {
    let mut parts = path.trim_end_matches('/').rsplit('/');
    let name = parts.next()?.to_string();
    match parts.next()? {
        "hooks" if !name.is_empty() => Some(Route::Hook(name)),
        "actions" if !name.is_empty() => Some(Route::Action(name)),
        _ => None,
    }
}

pub fn route(env: &JujuEnv, argv0: &str) -> Route {
    if let Some(r) = env.dispatch_path.as_deref().and_then(from_path) {
        return r;
    }
    if let Some(a) = &env.action_name {
        return Route::Action(a.clone());
    }
    if let Some(r) = from_path(argv0) {
        return r;
    }
    if let Some(h) = &env.hook_name {
        return Route::Hook(h.clone());
    }
    Route::Unknown(
        env.dispatch_path
            .clone()
            .unwrap_or_else(|| argv0.to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(dp: Option<&str>, action: Option<&str>) -> JujuEnv {
        JujuEnv {
            dispatch_path: dp.map(String::from),
            action_name: action.map(String::from),
            ..JujuEnv::default()
        }
    }

    #[test]
    fn routes_in_the_documented_order() {
        assert_eq!(
            route(
                &env(Some("actions/snapshot"), Some("restore")),
                "./dispatch"
            ),
            Route::Action("snapshot".into())
        );
        assert_eq!(
            route(&env(Some("hooks/config-changed"), None), "./dispatch"),
            Route::Hook("config-changed".into())
        );
        assert_eq!(
            route(&env(None, Some("restore")), "./dispatch"),
            Route::Action("restore".into())
        );
        assert_eq!(
            route(
                &env(None, None),
                "/var/lib/juju/agents/unit-etcd-0/charm/hooks/install"
            ),
            Route::Hook("install".into())
        );
        assert_eq!(
            route(&env(None, None), "actions/snapshot"),
            Route::Action("snapshot".into())
        );
        assert!(matches!(
            route(&env(None, None), "./dispatch"),
            Route::Unknown(_)
        ));
    }
}
