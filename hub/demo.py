"""``hub demo``: the main job on an embedded default, for a newcomer's first run."""

from __future__ import annotations

import datetime as dt
import json
import math
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from governance.settings import HubSettings, get_settings
from hub.console import DemoRefused, console, counting
from hub.linkage_summary import print_linkage
from synthetic_data import summary
from synthetic_data.generator import SynthConfig, generate

if TYPE_CHECKING:
    from governance.access.people import Principal, User
    from governance.facade import Governance
    from governance.queries import QueryService

# wide enough for the prevalence table when piped (rich assumes 80 columns then)
out = Console(width=None if sys.stdout.isatty() else 132)


def _fmt(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:.1f}"


DEMO_MARKER = ".hub-demo"
EXAMPLE_SQL = "SELECT sex, count(*) AS n FROM patients GROUP BY sex"
DUMMY_SQL = "SELECT sex, year_of_birth FROM patients LIMIT 5"


def _prepare_home(home: Path) -> None:
    """Start from a clean demo state; never touch a hub home that holds real work."""
    marker = home / DEMO_MARKER
    holds_work = (home / "releases").exists() or (home / "governance").exists()
    if holds_work and not marker.exists():
        raise DemoRefused(
            f"{home} already holds releases or users that the demo did not make; "
            "run the demo with another HUB_HOME"
        )
    for name in ("releases", "vault", "governance", "outputs", "dummy", "projects"):
        shutil.rmtree(home / name, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)
    marker.write_text("made by hub demo; the demo may reset this folder\n")


MIN_MODEL_PATIENTS = 30_000  # the DPP cohort then holds enough people to train privately


def run_demo(*, patients: int, dummy_patients: int, seed: int, serve: bool, port: int) -> None:
    settings = get_settings()
    home = settings.home
    out.rule("[bold]Health data hub demo")
    out.print(f"HUB_HOME = {home.resolve()}")
    _prepare_home(home)
    started = time.perf_counter()
    _populations(home, patients=patients, dummy_patients=dummy_patients, seed=seed)
    _releases(home)
    study = _study(settings, train=patients >= MIN_MODEL_PATIENTS)
    _synthetic_data(
        settings,
        steward_keys=(study.keys["demo.steward"], study.keys["demo.steward2"]),
        company_key=study.keys["demo.company"],
    )
    out.print(f"\n[bold]setup finished in {time.perf_counter() - started:.0f} s")
    _what_next(study, port=port)
    if serve:
        import uvicorn

        from connectors.releases import get_release
        from hub.app import create_app

        gov = settings.governance()
        out.print(
            f"serving release {get_release(home).id} on http://127.0.0.1:{port} (Ctrl+C stops)"
        )
        uvicorn.run(create_app(gov), host="127.0.0.1", port=port, log_level="warning")


def _populations(home: Path, *, patients: int, dummy_patients: int, seed: int) -> None:
    started = time.perf_counter()
    populations = (("real", patients, False), ("dummy", dummy_patients, True))
    for name, n, dummy in populations:
        config = SynthConfig(patients=n, seed=seed, dummy=dummy)
        with counting(n, f"{name} population") as advance:
            generate(config, home / "synthetic" / name, on_chunk=advance)
    out.print(f"generated both populations in {time.perf_counter() - started:.1f} s\n")

    folder = home / "synthetic" / "real"
    con = summary.connect(folder)
    counts = Table(title="Rows per table (real population)")
    counts.add_column("table")
    counts.add_column("rows", justify="right")
    for table, rows in summary.row_counts(con).items():
        counts.add_row(table, f"{rows:,}")
    out.print(counts)

    prev = Table(
        title="Recorded prevalence at the end of the window (%), by IMD decile (1 = most deprived)"
    )
    prev.add_column("condition")
    prev.add_column("age")
    prev.add_column("all", justify="right")
    prev.add_column("target", justify="right")
    for d in range(1, 11):
        prev.add_column(str(d), justify="right")
    for p in summary.prevalence(con, summary.window_end(folder)):
        prev.add_row(
            p.condition,
            f"{p.min_age}+",
            _fmt(p.percent),
            _fmt(p.target_percent),
            *(_fmt(x) for x in p.by_imd_decile),
        )
    out.print(prev)

    s = summary.study(con)
    if s is None:
        out.print("No prediabetes index events: the study needs a larger population.")
        return
    out.print("[bold]Embedded study: NHS Diabetes Prevention Programme after prediabetes")
    out.print(
        f"  {s.index_events:,} new prediabetes diagnoses; {s.referred_percent:.0f}% referred "
        f"(confounded by age, BMI and deprivation); {s.complete_follow_up:,} with 2-year follow-up"
    )
    out.print(
        f"  true average effect on 2-year diabetes risk: {s.true_effect_risk:+.1f} points; "
        f"naive referred-vs-not difference: {s.naive_effect_risk:+.1f} points"
    )
    out.print(
        f"  heterogeneity: the 10% who benefit most {s.best_decile_effect:+.1f} points, "
        f"the 10% who benefit least {s.worst_decile_effect:+.1f} points"
    )
    out.print(f"  ground truth (never loaded into a release): {folder / 'ground_truth'}")


def _releases(home: Path) -> None:
    """Both populations through the connectors and the quality gate."""
    from connectors.ingest import ingest
    from connectors.quality import gate_when_it_runs
    from connectors.secrets import resolve_keys
    from synthetic_data.feeds import write_feeds

    out.rule("Releases")
    # the real release comes the way a region's does: separate feeds, linked to persons
    feeds = home / "synthetic" / "real-feeds"
    shutil.rmtree(feeds, ignore_errors=True)  # the demo's own, from an earlier run
    with console.status("writing the region's feeds") as status:
        written = write_feeds(
            home / "synthetic" / "real", feeds,
            progress=lambda label: status.update(f"writing the region's feeds: {label}"),
        )  # fmt: skip
    out.print(
        f"the real population as {len(written.feeds)} feeds ({written.records:,} records): "
        "two GP suppliers, six acute trusts, A&E and the death register, each with its own "
        f"ids, conventions and typing errors ({feeds})"
    )
    sources = (
        ("real", home, feeds, "feeds"),
        ("dummy", home / "dummy", home / "synthetic" / "dummy", "native"),
    )
    for name, target, src, fmt in sources:
        with console.status(f"ingesting the {name} population") as status:

            def step(label: str, status: Any = status, name: str = name) -> None:
                status.update(f"ingesting the {name} population: {label}")

            result = ingest(
                src,
                fmt=fmt,
                home=target,
                keys=resolve_keys(target, create=True),
                gate=gate_when_it_runs,
                progress=step,
            )
        if fmt == "feeds":
            print_linkage(result.release.manifest.get("linkage"), to=out)
        q = result.release.manifest["quality"]["summary"]
        out.print(
            f"{name:5} release {result.release.id}: "
            f"{result.counts['patients'].published:,} people, "
            f"quality gate passed ({q['checks']} checks, {q['failed_warnings']} warnings)"
        )


@dataclass
class Study:
    keys: dict[str, str]
    project_id: str
    output_id: str


def _controllers_decide(gov: Governance, project_id: str, until: dt.date) -> None:
    """Each organisation whose feed is in the release approves its use in the project:
    until its data controller does, the project sees none of that feed's rows."""
    feeds = gov.release_feeds()
    if not feeds:
        return
    controllers: dict[str, User] = {}
    for n, controller in enumerate(sorted({f.controller for f in feeds}), start=1):
        user_id = f"demo.controller{n}"
        known = {u.user_id: u for u, _keys in gov.people.list()}
        controllers[controller] = (
            known.get(user_id)
            or gov.people.add(
                user_id=user_id,
                name=f"Controller {n}",
                role="controller",
                organisation=controller,
                organisation_type="nhs_trust",
                accreditation_expires=until,
                actor="hub demo",
            )[0]
        )
    for feed in feeds:
        gov.sources.decide(
            project_id, feed.name, controller=controllers[feed.controller], decision="approve"
        )
    out.print(
        f"{len(controllers)} data controllers approved the use of their {len(feeds)} feeds "
        f"in {project_id} (each can withdraw later: `hub sources decide ... --decision "
        "withdraw`)"
    )


def _study(settings: HubSettings, *, train: bool) -> Study:
    """Demo users, an approved project and a first study through the governed layer."""

    out.rule("People, a project, a study")
    gov = settings.governance(create_keys=True)
    until = dt.date.today() + dt.timedelta(days=365)
    keys, users = {}, {}
    for user_id, role, org, org_type in (
        ("demo.steward", "steward", "University Hospitals Birmingham NHS FT", "nhs_trust"),
        # a commercial project's outputs need two independent stewards (access policy)
        (
            "demo.steward2",
            "steward",
            "Sandwell and West Birmingham Hospitals NHS Trust",
            "nhs_trust",
        ),
        ("demo.researcher", "researcher", "University of Birmingham", "university"),
        ("demo.modeller", "modeller", "University of Warwick", "university"),
    ):
        user, key = gov.people.add(
            user_id=user_id,
            name=user_id.split(".")[1].title(),
            role=role,
            organisation=org,
            organisation_type=org_type,
            accreditation_expires=until,
            actor="hub demo",
        )
        keys[user_id], users[user_id] = key, user
    grants = {
        "patients": [
            "person_id",
            "sex",
            "year_of_birth",
            "imd_decile",
            "ethnicity",
            "local_authority",
        ],
        "conditions": ["person_id", "code", "onset_date"],
        "observations": ["person_id", "code", "value", "observed_date"],
        "procedures": ["person_id", "code", "procedure_date"],
        # the same records as OMOP CDM v5.4-shaped views, for OHDSI-style analyses
        "person": ["person_id", "gender_concept_id", "year_of_birth"],
        "condition_occurrence": [
            "person_id",
            "condition_source_value",
            "condition_source_vocabulary_id",
            "condition_start_date",
        ],
        "measurement": [
            "person_id",
            "measurement_source_value",
            "value_as_number",
            "unit_source_value",
            "measurement_date",
        ],
    }
    grants["patients"] += ["registration_end", "death_date"]
    project = gov.projects.request(
        requester=users["demo.researcher"],
        title="Who benefits from the Diabetes Prevention Programme?",
        purpose="Estimate how the effect of DPP referral on type 2 diabetes varies by age, "
        "BMI and deprivation.",
        lay_summary="We look at which people with raised blood sugar are helped most by a "
        "prevention programme.",
        grants=grants,
        days=180,
        members=["demo.modeller"],
    )
    gov.projects.approve(
        project.project_id,
        steward=users["demo.steward"],
        epsilon=20.0,
        delta=1e-5,
        trainers=["demo.modeller"],
    )
    out.print(f"project {project.project_id} approved: ε = 20, δ = 1e-5, 180 days")
    _controllers_decide(gov, project.project_id, until)
    service = gov.queries
    researcher = gov.people.authenticate(keys["demo.researcher"])
    pid = project.project_id
    dummy = service.run(
        researcher,
        pid,
        target="dummy",
        sql="SELECT sex, year_of_birth, imd_decile FROM patients LIMIT 3",
    )
    out.print(f"dummy release, exact rows: {dummy['rows']}")
    dp_answer = service.run(
        researcher,
        pid,
        target="real",
        mode="dp",
        epsilon=0.5,
        sql="SELECT imd_decile, count(*) AS people FROM patients GROUP BY imd_decile",
    )
    counts = ", ".join(f"{g}: {n:,}" for g, n in dp_answer["rows"])
    out.print(
        f"real release, DP (ε 0.5, ±{dp_answer['ci95_half_width']['people']:.0f} at 95%): "
        f"people by IMD decile {counts}"
    )
    exact = service.run(
        researcher,
        pid,
        target="real",
        mode="exact",
        sql="SELECT p.imd_decile, count(DISTINCT p.person_id) AS people FROM patients p "
        "JOIN conditions c USING (person_id) WHERE c.code = '714628002' GROUP BY ALL",
    )
    state = gov.ledger.state(pid)
    out.print(
        f"real release, exact: prediabetes by IMD decile sent for review as output "
        f"{exact['output_id']}; budget left ε = {state.epsilon_remaining:g}"
    )
    keys["demo.company"] = _company(gov, users["demo.steward"], until)
    # decided from the population size the demo chose (public), never from the data:
    # the hub no longer refuses a training because of what a cohort turned out to hold
    if train:
        _models(service, gov.people.authenticate(keys["demo.modeller"]), pid)
        from hub.demo_trial import show_against_truth

        show_against_truth(
            service, modeller=gov.people.authenticate(keys["demo.modeller"]),
            steward=gov.people.authenticate(keys["demo.steward"]), project_id=pid,
            population=settings.home / "synthetic" / "real", out=out,
        )  # fmt: skip
    else:
        out.print(
            f"[yellow]DP models skipped: too few training rows in a population this small. "
            f"The study cohort needs about {MIN_MODEL_PATIENTS:,} people or more "
            "(hub demo --patients N)."
        )
    return Study(keys, pid, exact["output_id"])


def _company(gov: Governance, steward: User, until: dt.date) -> str:
    """A life-science company's commercial project: terms stated, approved with a budget
    of a few feasibility runs, and a trial feasibility spec answered at once; the
    company's key (it later receives a synthetic dataset too)."""
    from governance.feasibility import EPSILON, FEASIBILITY_GRANTS, parse_spec
    from hub.cli.feasibility import show

    user, key = gov.people.add(
        user_id="demo.company",
        name="Company",
        role="researcher",
        organisation="Midlands Metabolic Therapeutics Ltd",
        organisation_type="life_science_company",
        accreditation_expires=until,
        actor="hub demo",
    )
    project = gov.projects.request(
        requester=user,
        title="Feasibility of a phase III trial in type 2 diabetes",
        purpose="Choose trial sites: how many adults with type 2 diabetes on metformin, "
        "without CKD, each trust and local authority could recruit.",
        lay_summary="A company counts, with privacy protection, where a diabetes trial "
        "could find enough volunteers.",
        grants=FEASIBILITY_GRANTS,
        days=90,
        public_benefit="New diabetes medicines are tested in the region's own hospitals, "
        "so local patients can join trials sooner.",
        daa_reference="DAA-2025/017",
        daa_expires=until,
    )
    gov.projects.approve(project.project_id, steward=steward, epsilon=5 * EPSILON, delta=0.0)
    _controllers_decide(gov, project.project_id, until)
    spec = parse_spec(
        {
            "title": "T2D on metformin, 40-80, no CKD",
            "as_of": "2024-12-31",  # the end of the demo population's records
            "population": {"age": [40, 80]},
            "include": [
                {"kind": "condition", "codelist": "type2-diabetes-snomed"},
                {"kind": "medication", "codes": ["0601022B0"]},
            ],
            "exclude": [{"kind": "condition", "codelist": "ckd-snomed"}],
        }
    )
    answer = gov.feasibility.run(gov.people.authenticate(key), project.project_id, spec)
    out.print(
        f"commercial project {project.project_id} ({user.organisation}): approved with "
        f"ε = {5 * EPSILON:g} (five feasibility runs); two stewards per exact output"
    )
    show(answer, out)
    return key


def _synthetic_data(
    settings: HubSettings, *, steward_keys: tuple[str, str], company_key: str
) -> None:
    """The same life-science company receives a DP synthetic copy of a flattened cohort for
    product development: it requests it in a second project (ε charged), the demo steward
    approves it, the file downloads."""
    import dataclasses

    from models import synthetic, synthetic_spec
    from models.examples import EXAMPLES

    out.rule("The company's synthetic dataset")
    started = time.perf_counter()
    gov = settings.governance()
    until = dt.date.today() + dt.timedelta(days=365)
    user = gov.people.authenticate(company_key).user
    project = gov.projects.request(
        requester=user, title="A type 2 diabetes risk tool: synthetic rows to build against",
        purpose="Prototype a T2D risk product on DP synthetic records before any real access.",
        lay_summary="A company builds its software on made-up records that mimic the region's.",
        grants={
            "patients": ["person_id", "year_of_birth", "sex", "ethnicity", "imd_decile"],
            "conditions": ["person_id", "code"],
            "medications": ["person_id", "code"],
            "observations": ["person_id", "code", "value", "observed_date"],
        },
        days=90,
        public_benefit="A risk tool built and tested on synthetic records first, so that "
        "no patient's record is used until the product is ready for a governed evaluation.",
        daa_reference="DAA-2025/021", daa_expires=until,
    )  # fmt: skip
    reviewer = gov.people.authenticate(steward_keys[0])
    gov.projects.approve(project.project_id, steward=reviewer.user, epsilon=3.0, delta=1e-6)
    _controllers_decide(gov, project.project_id, until)
    company = gov.people.authenticate(company_key)
    # a shorter fit than the example's keeps the demo quick; the benchmark runs it in full
    spec = dataclasses.replace(
        synthetic_spec.load(EXAMPLES / "synthetic_cohort.toml"), iterations=300
    )
    made = synthetic.generate(gov.queries, company, project.project_id, spec)
    card = made["card"]
    # the exact evaluation on real people is the stewards' to read, never the company's
    steward = gov.people.authenticate(steward_keys[0])
    ev = synthetic.steward_record(gov.queries, steward, project.project_id, made["dataset_id"])
    u, t = ev["utility"], ev["train_on_synthetic"]

    def fmt(x: float | None) -> str:
        return "–" if x is None else f"{x:.3f}"

    out.print(
        f"synthetic dataset {made['dataset_id']}: {card['rows']:,} rows at ε = "
        f"{card['epsilon']:g}; the stewards read (exact, kept in the hub): 2-way marginal "
        f"TV {fmt(u['marginal_tv_2way'])}; T2D AUROC trained on synthetic "
        f"{fmt(t['auroc_train_synthetic'])} vs real {fmt(t['auroc_train_real'])}; "
        f"membership check AUC {fmt(ev['membership']['attack_auc'])}"
    )
    for key in steward_keys:  # a commercial project's outputs: two independent stewards
        gov.outputs.review(
            gov.people.authenticate(key),
            made["output_id"],
            decision="approve",
            reason="demo: data card checked",
        )
    body = gov.outputs.download(company, made["output_id"])
    path = settings.home / "downloads" / f"{made['dataset_id']}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body["parquet"])
    out.print(
        f"approved by demo.steward and demo.steward2 (output {made['output_id']}); the "
        "company downloaded "
        f"{path} in {time.perf_counter() - started:.0f} s"
    )


def _models(service: QueryService, modeller: Principal, pid: str) -> None:
    """DP models of the study: a risk model at three ε (the privacy-utility trade-off,
    plotted) and the who-benefits model, sent for a steward's review."""
    import dataclasses
    import secrets

    from models import spec as specs
    from models.examples import EXAMPLES
    from models.trainer import Trainer

    out.rule("DP models (Opacus DP-SGD, charged to the project's budget)")
    bench = Trainer(service, modeller)
    risk = specs.load(EXAMPLES / "risk_model.toml")
    points = []
    split_key = secrets.token_bytes(16)  # the three models share their held-out people
    for eps in (0.25, 0.5, 1.0):
        with counting(1, f"risk model at ε {eps:g}", unit="models") as advance:
            model = bench.train(
                pid, dataclasses.replace(risk, epsilon=eps), progress=False, split_key=split_key
            )
            advance(1)
        m = model.card["metrics"]  # DP held-out metrics
        auroc = m["auroc"] if m.get("auroc") is not None else float("nan")
        points.append((eps, auroc, auroc, auroc))
        out.print(
            f"  {model.model_id}: ε {model.card['epsilon_total']:.2f}, DP held-out AUROC "
            f"{auroc:.3f}, Brier {m['brier']:.3f}"
        )
    plot = service.workspace(pid) / "privacy_utility.png"
    _privacy_utility_plot(points, plot)
    out.print(f"  privacy-utility plot: {plot}")
    with counting(1, "who-benefits model at ε 3", unit="models") as advance:
        effect = bench.train(pid, specs.load(EXAMPLES / "who_benefits.toml"), progress=False)
        advance(1)
    benefit = effect.card["metrics"]["mean_predicted_benefit"]
    out.print(
        f"  {effect.model_id}: mean expected fall in 12-month HbA1c with DPP referral "
        f"{benefit:.1f} mmol/mol (DP, held out)"
    )
    output_id = bench.submit(pid, effect.model_id)
    out.print(f"  sent for release review as {output_id}; model card: {effect.folder}/card.md")
    state = service.gov.ledger.state(pid)
    out.print(f"  budget left ε = {state.epsilon_remaining:.2f}")


def _privacy_utility_plot(points: list[tuple[float, float, float, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    eps = [p[0] for p in points]
    auc = [p[1] for p in points]
    err = [[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]]
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=100)
    ax.errorbar(eps, auc, yerr=err, marker="o", capsize=3, label="DP model (95% CI)")
    ax.axhline(0.5, color="grey", linestyle=":", label="chance (AUROC 0.5)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.set_xlabel("privacy budget ε (log scale; smaller is more private)")
    ax.set_ylabel("AUROC on held-out people")
    ax.set_ylim(0.45, 1.0)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title("DP risk model: privacy against utility", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _what_next(study: Study, *, port: int) -> None:
    url = f"http://127.0.0.1:{port}"
    out.rule("What to open")
    out.print(f"API docs          {url}/docs")
    out.print(f"public register   {url}/v1/public/projects")
    out.print(f"steward dashboard {url}/steward/ (sign in with the demo.steward key)")
    out.print("demo keys (shown once; give one to the CLI as HUB_API_KEY to act as that user):")
    for user_id, key in study.keys.items():
        out.print(f"  {user_id:<16} {key}")
    r, s = study.keys["demo.researcher"], study.keys["demo.steward"]
    pid = study.project_id
    out.print("\n[bold]try")
    body = json.dumps({"sql": EXAMPLE_SQL, "target": "real", "mode": "dp", "epsilon": 0.2})
    auth_r = f"-H 'Authorization: Bearer {r}'"
    auth_s = f"-H 'Authorization: Bearer {s}'"
    lines = [
        f"curl -s {auth_r} -H 'content-type: application/json' -d '{body}' "
        f"{url}/v1/projects/{pid}/queries",
        f"curl -s {auth_s} {url}/v1/outputs",
        f"curl -s -X POST {auth_s} {url}/v1/outputs/{study.output_id}/approve",
        # this interpreter's own path: the command works as printed, venv active or not
        f'{shlex.quote(sys.executable)} -c "from hub.client import HubClient; '
        f"h = HubClient('{url}', '{r}', project='{pid}'); "
        f'print(h.query({DUMMY_SQL!r}))"',
    ]
    for line in lines:
        out.print(line, soft_wrap=True, markup=False)


__all__ = ["DemoRefused", "Study", "run_demo"]
