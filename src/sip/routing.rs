//! Routing of inbound calls (`[[route]]`): the first route whose conditions all
//! hold takes the call. Conditions: `trunk` (the trunk the call arrived on), `to`
//! (Request-URI user part, the dialled number), `from` (caller). Sans-IO.

use crate::config::Route;

/// The first route matching a call that arrived on `trunk`, dialled `to`, from
/// `from`; `None` → 404.
pub fn select<'r>(routes: &'r [Route], trunk: &str, to: &str, from: &str) -> Option<&'r Route> {
    routes.iter().find(|r| {
        r.trunk.as_deref().is_none_or(|t| t == trunk)
            && r.to.as_ref().is_none_or(|p| p.matches(to))
            && r.from.as_ref().is_none_or(|p| p.matches(from))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouteTarget;
    use crate::config::values::NumberPattern;

    fn route(name: &str, trunk: Option<&str>, to: Option<&str>, from: Option<&str>) -> Route {
        Route {
            name: name.into(),
            trunk: trunk.map(Into::into),
            to: to.map(|s| NumberPattern::parse(s).unwrap()),
            from: from.map(|s| NumberPattern::parse(s).unwrap()),
            target: RouteTarget::Room(name.into()),
            record: false,
            ring_for: std::time::Duration::ZERO,
            pin: None,
            noise_suppression: None,
            record_format: None,
        }
    }

    #[test]
    fn first_match_wins_on_trunk_to_and_from() {
        let routes = vec![
            route("sales", Some("telnyx"), Some("+13125550100"), None),
            route("vip", None, Some("+1312*"), Some("+1415*")),
            route("livekit", Some("livekit"), None, None),
            route("rest", None, None, None),
        ];
        assert_eq!(select(&routes, "telnyx", "+13125550100", "+1999").unwrap().name, "sales");
        assert_eq!(select(&routes, "telnyx-ip", "+13125550100", "+14155550000").unwrap().name, "vip");
        assert_eq!(select(&routes, "livekit", "+13125550100", "+1999").unwrap().name, "livekit");
        assert_eq!(select(&routes, "generic", "100", "200").unwrap().name, "rest");
        assert!(select(&routes[..3], "generic", "100", "200").is_none());
    }
}
