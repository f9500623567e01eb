//! Routes: which path and method reach which handler, with which checks.

use std::convert::Infallible;
use std::sync::Arc;

use warp::{Filter, Rejection, Reply};

use super::auth::{Credentials, Scope};
use super::body;
use super::handlers;
use super::models::ApiError;
use super::App;
use crate::metrics::ErrorKind;

pub(crate) fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let livez = warp::path!("livez")
        .and(warp::get())
        .and_then(handlers::livez);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_app(app.clone()))
        .and_then(handlers::readyz);
    // These name every notebook, its owner and URL: with a metrics token
    // set, only Prometheus reads them.
    let scrape_auth = || scrape_authorized(app.clone());
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(scrape_auth())
        .and_then(handlers::metrics);
    let notebook_metrics = warp::path!("metrics" / "notebooks")
        .and(warp::get())
        .and(scrape_auth())
        .and_then(handlers::notebook_metrics);
    let sd = warp::path!("sd" / "notebooks")
        .and(warp::get())
        .and(scrape_auth())
        .and_then(handlers::sd_notebooks);

    let webhook = warp::path!("webhook" / "alertmanager")
        .and(warp::post())
        .and(authorized(
            app.clone(),
            |a| &a.webhook_credentials,
            ErrorKind::WebhookAuth,
        ))
        .and(body::bounded(app.body_limits.clone()))
        .and_then(handlers::webhook);

    // Auth comes after path and method, so it runs once per request (and
    // counts one failure), not once per API route tried.
    let api_auth = || api_authorized(app.clone());
    let list = warp::path!("api" / "v1" / "notebooks")
        .and(warp::get())
        .and(api_auth())
        .and_then(handlers::list_notebooks);
    let get = warp::path!("api" / "v1" / "notebooks" / String / String)
        .and(warp::get())
        .and(api_auth())
        .and_then(handlers::get_notebook);
    let stop = warp::path!("api" / "v1" / "notebooks" / String / String / "stop")
        .and(warp::post())
        .and(api_auth())
        .and_then(handlers::stop_notebook);
    let start = warp::path!("api" / "v1" / "notebooks" / String / String / "start")
        .and(warp::post())
        .and(api_auth())
        .and_then(handlers::start_notebook);

    let keep = || warp::path!("api" / "v1" / "notebooks" / String / String / "keep-running");
    let keep_running = keep()
        .and(warp::post())
        .and(api_auth())
        .and(body::bounded(app.body_limits.clone()))
        .and_then(handlers::keep_running);
    let cancel_keep_running = keep()
        .and(warp::delete())
        .and(api_auth())
        .and_then(handlers::cancel_keep_running);

    livez
        .or(readyz)
        .or(metrics)
        .or(notebook_metrics)
        .or(sd)
        .or(webhook)
        .or(list)
        .or(get)
        .or(stop)
        .or(start)
        .or(keep_running)
        .or(cancel_keep_running)
        // The notebook page (`/`, sign-in): its own replies, never rejections.
        .or(crate::page::routes(app.clone()))
        .recover(handlers::recover)
        .with(warp::trace::request())
}

fn with_app(app: Arc<App>) -> impl Filter<Extract = (Arc<App>,), Error = Infallible> + Clone {
    warp::any().map(move || app.clone())
}

/// Passes the app on when the `Authorization` header carries credentials
/// that `pick` accepts; rejects with 401 otherwise.
fn authorized(
    app: Arc<App>,
    pick: fn(&App) -> &Credentials,
    error_kind: ErrorKind,
) -> impl Filter<Extract = (Arc<App>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_app(app))
        .and_then(move |header: Option<String>, app: Arc<App>| async move {
            if pick(&app).allows(header.as_deref()) {
                Ok(app)
            } else {
                app.metrics.error(error_kind);
                Err(warp::reject::custom(ApiError::unauthorized()))
            }
        })
}

/// Passes the app on when no metrics token is set or the header carries it;
/// rejects with 401 otherwise.
fn scrape_authorized(
    app: Arc<App>,
) -> impl Filter<Extract = (Arc<App>,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_app(app))
        .and_then(|header: Option<String>, app: Arc<App>| async move {
            if app.api_tokens.allows_scrape(header.as_deref()) {
                Ok(app)
            } else {
                app.metrics.error(ErrorKind::MetricsAuth);
                Err(warp::reject::custom(ApiError::unauthorized()))
            }
        })
}

/// Passes the app and the caller's scope on for a valid API token; rejects
/// with 401 otherwise.
fn api_authorized(
    app: Arc<App>,
) -> impl Filter<Extract = (Arc<App>, Scope), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and(with_app(app))
        .and_then(|header: Option<String>, app: Arc<App>| async move {
            match app.api_tokens.scope(header.as_deref()) {
                Some(scope) => Ok((app, scope)),
                None => {
                    app.metrics.error(ErrorKind::ApiAuth);
                    Err(warp::reject::custom(ApiError::unauthorized()))
                }
            }
        })
        .untuple_one()
}
