"""Where the Prefect UI of this home's runs is, worked out without importing Prefect (``rlam show`` stays fast).

With ``PREFECT_UI_URL`` set, that. With ``PREFECT_API_URL`` set, the UI Prefect itself derives from
the API address (``ui_url_for_api`` follows Prefect 3.8's rule, Prefect Cloud included). Otherwise
this home's local server: its address while it runs, else the port it will start on again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rlam_prefect.core.home import HomeLayout

CLOUD_API_URL = "https://api.prefect.cloud/api"  # Prefect's default PREFECT_CLOUD_API_URL


@dataclass(frozen=True)
class UI:
    url: str  # the UI's base address, e.g. http://127.0.0.1:4200
    running: bool  # False: this home's local server is stopped (``rlam ui`` starts it)
    source: str  # PREFECT_UI_URL | PREFECT_API_URL | local server

    def dashboard(self) -> str:
        return f"{self.url}/dashboard"

    def flow_run(self, flow_run_id: str) -> str:
        return f"{self.url}/runs/flow-run/{flow_run_id}"


def ui_url_for_api(api_url: str) -> str:
    """The UI address Prefect derives from an API address (``prefect.settings`` ``ui_url`` default)."""
    cloud_api = os.environ.get("PREFECT_CLOUD_API_URL") or CLOUD_API_URL
    cloud_ui = os.environ.get("PREFECT_CLOUD_UI_URL") or cloud_api.replace("https://api", "https://app", 1).removesuffix("/api")
    url = api_url.replace(cloud_api, cloud_ui) if api_url.startswith(cloud_api) else api_url
    url = url.removesuffix("/api").replace("/api/", "/")
    return url.replace("/accounts/", "/account/").replace("/workspaces/", "/workspace/")


def find_ui(home: HomeLayout, start: bool = False) -> UI | None:
    """The UI this home's runs are in; ``start``: start this home's local server if it is not running."""
    from rlam_prefect.local import server

    if os.environ.get("PREFECT_UI_URL"):
        return UI(os.environ["PREFECT_UI_URL"].rstrip("/"), True, "PREFECT_UI_URL")
    if os.environ.get("PREFECT_API_URL"):
        return UI(ui_url_for_api(os.environ["PREFECT_API_URL"].rstrip("/")), True, "PREFECT_API_URL")
    if start:
        return UI(server.ensure_server(home).removesuffix("/api"), True, "local server")
    state = server.read_state(home)
    if state and server.healthy(state["url"]):
        return UI(state["url"].removesuffix("/api"), True, "local server")
    port = server.last_port(home)
    return UI(f"http://127.0.0.1:{port}", False, "local server") if port else None
