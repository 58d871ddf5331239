"""A small Python client for researchers working in notebooks.

>>> # hub = HubClient("http://127.0.0.1:8000", key, project="p-1a2b3c4d")
>>> # sql = "SELECT sex, count(*) FROM patients GROUP BY sex"
>>> # hub.query(sql, target="real", mode="dp", epsilon=0.5)
"""

from __future__ import annotations

from typing import Any

import httpx
import pandas as pd


class HubError(Exception):
    """A refusal from the hub: ``status`` and the problem's ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class HubClient:
    def __init__(
        self, url: str, key: str, *, project: str | None = None, timeout: float = 120.0
    ) -> None:
        self.project = project
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except ValueError:
                body = {}
            raise HubError(
                response.status_code, body.get("code", "error"), body.get("detail", response.text)
            )
        if response.headers.get("content-type", "").startswith("text/csv"):
            return response.text
        return response.json()

    def _project(self, project: str | None) -> str:
        chosen = project or self.project
        if not chosen:
            raise ValueError("name a project (HubClient(..., project=...) or project=...)")
        return chosen

    def me(self) -> dict[str, Any]:
        return dict(self._call("GET", "/me"))

    def datasets(self, project: str | None = None) -> dict[str, Any]:
        return dict(self._call("GET", "/datasets", params={"project_id": self._project(project)}))

    def query(
        self,
        sql: str,
        *,
        target: str = "dummy",
        mode: str | None = None,
        epsilon: float | None = None,
        project: str | None = None,
        rows_per_person: int | None = None,
    ) -> pd.DataFrame:
        """Rows as a DataFrame; DP metadata and pending outputs ride in ``df.attrs``.

        ``rows_per_person`` (dp mode) is the most rows one person may contribute (k), up to
        the source's steward-set maximum; the default is the source's own.
        """
        body: dict[str, Any] = {"sql": sql, "target": target}
        if rows_per_person is not None:
            body["rows_per_person"] = rows_per_person
        if mode is not None:
            body["mode"] = mode
        if epsilon is not None:
            body["epsilon"] = epsilon
        result = self._call("POST", f"/projects/{self._project(project)}/queries", json=body)
        frame = pd.DataFrame(result.get("rows", []), columns=result.get("columns") or None)
        frame.attrs.update({k: v for k, v in result.items() if k not in ("rows", "columns")})
        return frame

    def projects(self) -> list[dict[str, Any]]:
        """Your projects (a steward's: every project), with status, grants and expiry."""
        return list(self._call("GET", "/projects")["projects"])

    def queries(self, project: str | None = None) -> list[dict[str, Any]]:
        """The project's queries, newest first, each with its status: an exact query's is
        its output's decision (``pending_review``, ``approved``, ``rejected``, ``returned``)."""
        return list(self._call("GET", f"/projects/{self._project(project)}/queries")["queries"])

    def query_status(self, query_id: str, project: str | None = None) -> dict[str, Any]:
        """One query: its status and, for an exact query, ``output`` (reasons, link)."""
        return dict(self._call("GET", f"/projects/{self._project(project)}/queries/{query_id}"))

    def outputs(
        self, *, status: str | None = None, project: str | None = None
    ) -> list[dict[str, Any]]:
        """Researchers: your projects' outputs with status, reviewers' reasons and download
        link. Stewards: outputs by status (default: those awaiting review)."""
        params = {k: v for k, v in (("status", status), ("project_id", project)) if v}
        return list(self._call("GET", "/outputs", params=params)["outputs"])

    def output(self, output_id: str) -> dict[str, Any]:
        """One output: status, reasons and (once approved) its download link."""
        return dict(self._call("GET", f"/outputs/{output_id}"))

    def approve_output(self, output_id: str, reason: str | None = None) -> dict[str, Any]:
        return dict(self._call("POST", f"/outputs/{output_id}/approve", json={"reason": reason}))

    def reject_output(self, output_id: str, reason: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/outputs/{output_id}/reject", json={"reason": reason}))

    def return_output(self, output_id: str, reason: str) -> dict[str, Any]:
        """Return an output for changes (stewards): the reason tells the researcher what."""
        return dict(self._call("POST", f"/outputs/{output_id}/return", json={"reason": reason}))

    def download(self, output_id: str) -> pd.DataFrame:
        body = self._call("GET", f"/outputs/{output_id}/download")
        return pd.DataFrame(body["rows"], columns=body["columns"])

    def close(self) -> None:
        self._http.close()
