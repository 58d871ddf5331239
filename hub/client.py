"""A small Python client for researchers working in notebooks.

>>> # with HubClient("http://127.0.0.1:8000", key, project="p-1a2b3c4d") as hub:
>>> #     hub.query("SELECT sex, count(*) FROM patients GROUP BY sex",
>>> #               target="real", mode="dp", epsilon=0.5)

Every failure is a :class:`HubError` (a refusal, with the hub's ``code`` and ``detail``)
or a :class:`HubUnavailable` (the hub could not be reached): never a raw ``httpx`` error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import pandas as pd


class HubError(Exception):
    """A refusal from the hub: ``status`` and the problem's ``code`` and ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class HubUnavailable(HubError):
    """The hub could not be reached or did not answer in time (nothing was done)."""

    def __init__(self, detail: str) -> None:
        super().__init__(0, "unavailable", detail)


@dataclass(frozen=True)
class PendingReview:
    """An exact query's answer: an output waiting for a steward, not rows (yet).

    Follow it with ``hub.output(output_id)``; once approved, ``hub.download(output_id)``.
    """

    query_id: str
    output_id: str
    release: str

    def __str__(self) -> str:
        return (
            f"output {self.output_id} is pending review by a data steward: no rows until "
            f"it is approved. hub.output({self.output_id!r}) shows its status and the "
            f"reviewer's reason; hub.download({self.output_id!r}) fetches it once approved."
        )

    __repr__ = __str__

    status = "pending_review"

    @property
    def attrs(self) -> dict[str, str]:
        """The same fields as a DataFrame answer's ``attrs``, for code that reads them."""
        return {
            "status": self.status,
            "query_id": self.query_id,
            "output_id": self.output_id,
            "release": self.release,
        }


class HubClient:
    """A researcher's (or steward's) session with a hub, over its HTTP API.

    ``url`` is the hub's address, ``key`` your API key, ``project`` the default project
    for the calls that need one. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self, url: str, key: str, *, project: str | None = None, timeout: float = 120.0
    ) -> None:
        self.project = project
        self._http = httpx.Client(
            base_url=url.rstrip("/") + "/v1",
            headers={"Authorization": f"Bearer {key}"},
            timeout=timeout,
        )

    def __enter__(self) -> HubClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TimeoutException:
            raise HubUnavailable(
                f"the hub did not answer {method} {path} in time; try again or ask its operator"
            ) from None
        except httpx.HTTPError as exc:
            raise HubUnavailable(
                f"could not reach the hub at {self._http.base_url} ({type(exc).__name__}); "
                "is `hub serve` running?"
            ) from None

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
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
        """Who the key belongs to: user, role, organisation and accreditation."""
        return dict(self._call("GET", "/me"))

    def datasets(self, project: str | None = None) -> dict[str, Any]:
        """The data dictionary of what the project may use: tables and columns in words,
        units, DP domains and bounds, codes in use, and the codelists."""
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
        all_rows: bool = False,
    ) -> pd.DataFrame | PendingReview:
        """Run a query: rows as a DataFrame, or a :class:`PendingReview` for exact mode.

        - ``target="dummy"``: exact rows from the dummy release, 10,000 at a time;
          ``all_rows=True`` fetches every page (add ORDER BY for stable pages).
        - ``target="real", mode="dp", epsilon=ε``: noisy aggregates now, charged to the
          project's budget; the noise scales, intervals and the budget left are in
          ``df.attrs``. ``rows_per_person`` (k) bounds each person's rows, up to the
          source's steward-set maximum.
        - ``target="real", mode="exact"``: the table goes to a steward; you get a
          :class:`PendingReview` naming the output to follow.
        """
        body: dict[str, Any] = {"sql": sql, "target": target}
        if rows_per_person is not None:
            body["rows_per_person"] = rows_per_person
        if mode is not None:
            body["mode"] = mode
        if epsilon is not None:
            body["epsilon"] = epsilon
        path = f"/projects/{self._project(project)}/queries"
        result = self._call("POST", path, json=body)
        if result.get("status") == "pending_review":
            return PendingReview(result["query_id"], result["output_id"], result["release"])
        rows = list(result.get("rows", []))
        while all_rows and result.get("truncated"):
            result = self._call("POST", path, json={**body, "offset": len(rows)})
            rows.extend(result.get("rows", []))
        frame = pd.DataFrame(rows, columns=result.get("columns") or None)
        frame.attrs.update({k: v for k, v in result.items() if k not in ("rows", "columns")})
        if result.get("truncated"):
            warnings.warn(
                f"only the first {len(rows):,} rows came back; pass all_rows=True for the rest",
                stacklevel=2,
            )
        if result.get("no_answer"):
            warnings.warn(f"no answer: {result.get('reason')}", stacklevel=2)
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

    def trial(
        self, study: str | Path, *, name: str | None = None, project: str | None = None
    ) -> dict[str, Any]:
        """Run an emulated trial (a study spec's TOML text or file; SQL inline): ε is
        charged and the DP estimate goes to a steward; returns the trial and output ids.
        Read the estimate with :meth:`download` once the output is approved."""
        if isinstance(study, Path):
            name, study = name or study.stem, study.read_text()
        body = {"study": study, "name": name or "study"}
        return dict(self._call("POST", f"/projects/{self._project(project)}/trials", json=body))

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
        """Approve an output (stewards)."""
        return dict(self._call("POST", f"/outputs/{output_id}/approve", json={"reason": reason}))

    def reject_output(self, output_id: str, reason: str) -> dict[str, Any]:
        """Reject an output (stewards), saying why."""
        return dict(self._call("POST", f"/outputs/{output_id}/reject", json={"reason": reason}))

    def return_output(self, output_id: str, reason: str) -> dict[str, Any]:
        """Return an output for changes (stewards): the reason tells the researcher what."""
        return dict(self._call("POST", f"/outputs/{output_id}/return", json={"reason": reason}))

    def download(self, output_id: str, path: str | Path | None = None) -> pd.DataFrame:
        """An approved output as a DataFrame; with ``path``, also saved there as Parquet
        (a folder gets the hub's file name, ``<output_id>.parquet``)."""
        body = self._call("GET", f"/outputs/{output_id}/download")
        frame = pd.DataFrame(body["rows"], columns=body["columns"])
        if path is not None:
            response = self._request(
                "GET", f"/outputs/{output_id}/download", params={"format": "parquet"}
            )
            if response.status_code >= 400:
                raise HubError(response.status_code, "download_failed", response.text[:200])
            target = Path(path)
            if target.is_dir():
                disposition = response.headers.get("content-disposition", "")
                name = disposition.rsplit("filename=", 1)[-1].strip('"') or f"{output_id}.parquet"
                target = target / name
            target.write_bytes(response.content)
        return frame

    def close(self) -> None:
        """Close the connection (a ``with`` block does this for you)."""
        self._http.close()
