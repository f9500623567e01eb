//! The page's routes. Each matches its path and method first, so a
//! request for another route passes through untouched to the API's.

use std::sync::Arc;

use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

use super::assets;
use super::handlers::{self, Act, Post};
use super::request::{form, raw_query, request};
use crate::server::App;

/// `/`, `/sign-in`, `/sign-out`, `/notebooks/{stop,start,keep-running}`,
/// `/notebooks/keep-running/cancel`,
/// `/page/states` and the assets.
pub(crate) fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let form = {
        let read_timeout = app.body_limits.read_timeout;
        move || form(read_timeout)
    };
    let with_app = move || {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let index = warp::path::end()
        .and(warp::get())
        .and(with_app())
        .and(request())
        .and(raw_query())
        .and_then(handlers::index);
    let states = warp::path!("page" / "states")
        .and(warp::get())
        .and(with_app())
        .and(request())
        .and(raw_query())
        .and_then(handlers::states);
    let sign_in_form = warp::path!("sign-in")
        .and(warp::get())
        .and(with_app())
        .and(request())
        .and_then(handlers::sign_in_form);
    let sign_in = warp::path!("sign-in")
        .and(warp::post())
        .and(with_app())
        .and(request())
        .and(form())
        .and_then(handlers::sign_in);
    let sign_out = warp::path!("sign-out")
        .and(warp::post())
        .and(with_app())
        .and(request())
        .and(form())
        .and_then(|app, req, form| handlers::act(Post::SignOut, app, req, form));
    let stop = warp::path!("notebooks" / "stop")
        .and(warp::post())
        .and(with_app())
        .and(request())
        .and(form())
        .and_then(|app, req, form| handlers::act(Act::Stop, app, req, form));
    let start = warp::path!("notebooks" / "start")
        .and(warp::post())
        .and(with_app())
        .and(request())
        .and(form())
        .and_then(|app, req, form| handlers::act(Act::Start, app, req, form));
    let keep = warp::path!("notebooks" / "keep-running")
        .and(warp::post())
        .and(with_app())
        .and(request())
        .and(form())
        .and_then(|app, req, form| handlers::act(Act::KeepRunning, app, req, form));
    let cancel = warp::path!("notebooks" / "keep-running" / "cancel")
        .and(warp::post())
        .and(with_app())
        .and(request())
        .and(form())
        .and_then(|app, req, form| handlers::act(Act::Cancel, app, req, form));
    let css = warp::path!("assets" / "page.css")
        .and(warp::get())
        .map(|| handlers::asset(assets::CSS, "text/css; charset=utf-8"));
    let js = warp::path!("assets" / "page.js")
        .and(warp::get())
        .map(|| handlers::asset(assets::JS, "text/javascript; charset=utf-8"));
    index
        .or(states)
        .unify()
        .or(sign_in_form)
        .unify()
        .or(sign_in)
        .unify()
        .or(sign_out)
        .unify()
        .or(stop)
        .unify()
        .or(start)
        .unify()
        .or(keep)
        .unify()
        .or(cancel)
        .unify()
        .or(css)
        .unify()
        .or(js)
        .unify()
        .boxed()
}
