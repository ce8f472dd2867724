//! The routes the pipeline dispatches to once a request is let through
//! (`docs/pipeline.md`): portcullis's own (admin API, `/metrics`, the
//! dashboard; under `upstream.admin_prefix` in proxy mode) and demo mode's
//! service.

use axum::routing::{delete, get, post};
use axum::Router;

use crate::admin_api::{self, App};
use crate::ui::{self, UiContext};

/// The admin API, `/metrics` and the dashboard.
pub fn own(app: App, ui: UiContext) -> Router {
    Router::new()
        .route("/metrics", get(admin_api::metrics))
        .route("/admin/bans", get(admin_api::bans).post(admin_api::ban))
        .route("/admin/bans/{ip}", delete(admin_api::unban))
        .route("/admin/status", get(admin_api::status))
        .route("/admin/reload", post(admin_api::reload))
        .with_state(app)
        .merge(ui::routes(ui))
}

/// Demo mode's service: `GET /`, `POST /login`.
pub fn demo(app: App) -> Router {
    crate::demo::routes(app)
}
