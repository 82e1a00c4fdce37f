"""The prose of docs/benchmarks.md: how each figure is measured, what was fixed, what remains.

Numbers come from the run's data; the explanations are the engineers' reading of them.
"""

from __future__ import annotations

from typing import Any


def _figure(data: dict[str, Any], key: str) -> dict[str, Any] | None:
    return next((f for f in data["figures"] if f["key"] == key), None)


def machine_note(data: dict[str, Any]) -> list[str]:
    before = (data.get("machine") or {}).get("load_average")
    after = (data.get("machine_after") or {}).get("load_average")
    return [
        f"Load average at the start {before}, at the end {after}. The machine is shared: "
        "other engineers' test suites may run at the same time, which is why every figure "
        "is set against a reference measured minutes apart in the same run, and why the "
        "ratios are more stable than the absolute values.",
        "",
    ]


def _img(plots: list[str], name: str, alt: str) -> list[str]:
    return [f"![{alt}](benchmarks/{name})", ""] if name in plots else []


def sections(data: dict[str, Any], plots: list[str]) -> list[str]:
    lines: list[str] = []
    pipeline = data.get("pipeline") or {}
    population = data.get("population") or {}
    crl = data.get("crl") or {}
    ocsp = data.get("ocsp") or {}
    web = data.get("web") or {}

    lines += [
        "## 1. Per-certificate pipeline",
        "",
        "MyCert: `mycert.services.issuance.request_issue` on a submitted request, in one "
        "process with the CA loaded once (as a worker): key, certificate, PKCS#12 "
        "(AES-256, PBKDF2 10,000 rounds), the certificate row, two or four outbox rows with "
        "the sealed keystore and password, the request's status, the audit event, one "
        "PostgreSQL transaction. Half the requests have a vendor (four outbox rows). "
        "Reference: `benchmarks/bare.py`, cryptography alone with the same profile, the same "
        "CA key object and the same PKCS#12 settings, no database.",
        "",
        "RSA key generation varies by a factor of several from one key to the next, so the "
        "goal-bearing ratio is *paired*: each iteration makes one key, timed once, and both "
        "pipelines finish with it (MyCert's keygen is handed that key); the order alternates. "
        "The *own keys* line lets each pipeline make its own keys, as in production (noisier).",
        "",
        *_img(plots, "pipeline.png", "per-certificate pipeline"),
    ]
    for key_type, result in pipeline.items():
        m = result["median"]
        lines.append(
            f"- {key_type}: keygen {m['keygen']:.1f} ms (median of {result['paired_runs']}); "
            f"after keygen MyCert {m['mycert_rest']:.2f} ms vs bare {m['bare_rest']:.2f} ms; "
            f"mean bare total {result['mean_bare_total_ms']:.1f} ms (the population's reference)."
        )
    lines += [""]

    lines += [
        "## 2. The whole population",
        "",
        "N professionals submit through `request_submit` (one transaction each; the "
        "issuance task is queued on commit), every other one with a vendor whose copies are "
        "OpenPGP-encrypted (an ed25519/cv25519 key made for the run in a short /tmp "
        "folder). Two Celery workers on Redis issue and send; the SMTP sink "
        "(`python -m mycert.mail.sink`, its own process) writes each accepted message to a "
        "Maildir, and the clock stops when the last expected message is there. Then the "
        "database is checked: every delivery `sent`, every request `sent`.",
        "",
        "Workers: two `celery worker --pool solo` processes (one task at a time each, no "
        "prefork parent relaying tasks to a child). Against one worker `--concurrency 2` "
        "(prefork: a parent and two children), two solo workers do the "
        "same work with one process fewer; on 150 EC requests (450 e-mails) both took the "
        "same time within 2% (6.9–7.5 s), solo slightly ahead, and it is simpler.",
        "",
        *_reference(population),
        *_img(plots, "population.png", "population"),
    ]
    for key_type, result in population.items():
        timeline = result["timeline"]
        tenth = next(
            (t for t, n in timeline if n >= result["expected_emails"] / 10),
            result["elapsed_seconds"],
        )
        lines.append(
            f"- {key_type}: {result['count']} requests, {result['expected_emails']} e-mails "
            f"in {result['elapsed_seconds']:.1f} s (reference {result['reference_seconds']:.1f} s, "
            f"{result['elapsed_seconds'] / result['reference_seconds']:.2f}×); 10% of the "
            f"e-mails by {tenth:.0f} s, the other 90% in the last "
            f"{result['elapsed_seconds'] - tenth:.0f} s; submissions took "
            f"{result['submit_seconds']:.1f} s; afterwards {result['unsent_after']} "
            f"deliveries unsent, {result['requests_not_sent_after']} requests not `sent`."
        )
        for number, run in enumerate(result.get("runs") or [], start=1):
            lines.append(
                f"  - run {number}: {run['elapsed_seconds']:.1f} s against "
                f"{run['reference_sample']} bare pipelines in {run['reference_sample_seconds']:.1f} s "
                f"→ {run['reference_seconds']:.1f} s for N: {run['ratio']:.2f}×"
            )
    lines += [
        "",
        "Each issuing task sends its certificate's e-mails itself once the certificate is "
        "committed, as one batch: one transaction claims the keystore and password e-mails "
        "(the vendor's copy too), the worker's kept SMTP connection carries them, keystores "
        "first, and one transaction records them; only retries go back to the queue. So the "
        "e-mails follow the issuance through the run instead of waiting behind every "
        "issuance queued before them.",
        "",
        *_cpu_table(population),
        *roundtrips(data),
    ]
    lines += [*floor(data), *growth(data)]
    lines += [""]

    lines += [
        "## 3. OCSP",
        "",
        "The same 256 certificates (a tenth revoked), the same delegated EC P-256 responder "
        "certificate and key, SHA-256 signatures, 1 h validity, SHA-1 CertID with a nonce "
        "(what `openssl ocsp` and most clients send). MyCert answers at `/pki/ocsp/` with "
        f"the web host's OCSP responder process ({ocsp.get('server', 'gunicorn')}) from "
        "PostgreSQL, uncached; the same application under "
        f"{ocsp.get('web_server', 'gunicorn')} and the shipped nginx in front "
        "(deploy/nginx/mycert-pki.conf, its 10 s cache) are measured in the same run; "
        "openssl answers with "
        "`openssl ocsp -index index.txt -port … -rsigner … -rkey … -CA …` over an index.txt "
        "of the same certificates.",
        "",
        "openssl's `-port` takes a number and binds every interface, so it runs in a "
        "network namespace of its own (`unshare --net`, loopback only) together with its "
        "load generator; it is probed with a real OCSP request, never a bare TCP connect, "
        "after which it spins. The load generator is h2load (HTTP/1.1 keep-alive, one "
        f"thread, {ocsp.get('connections', 8)} connections, the same request for both, as "
        "many requests as the server answers in the run's duration; the load repeats the "
        "request for one good certificate, both responders hold all 256): wrk could not be used "
        "because it opens a bare connection before its real ones, which stalls openssl.",
        "",
        *_img(plots, "ocsp.png", "OCSP"),
        "MyCert serves what workers signed ahead (RFC 5019): the web process holds no key "
        "(it runs without any CA passphrase or outbox key), parses the request, finds the "
        "stored answer and the certificate's revocation in one prepared PostgreSQL query, "
        "and returns the bytes, answered in the WSGI application before Django's "
        "request cycle (`mycert.views.pki.OcspFastPath`). The query runs as one libpq "
        "call (`PQexecPrepared` through psycopg's `pgconn`) rather than through a psycopg "
        "cursor, whose Python generators and wait loop cost ~70 µs of client CPU per "
        "lookup against ~15 µs (same process, same table); the headers derived from a "
        "stored answer (ETag, dates) are formatted once per answer. The database is still "
        "read on every request, so a committed revocation is seen by the next answer. "
        "openssl signs every answer in C on one core; MyCert's remaining cost is the "
        "Python application (parsing the request, the headers), the database round trip "
        "and the PostgreSQL backend's share of the same 2 cores; granian's own share, "
        "measured with a WSGI application returning fixed bytes, is ~40–50 µs per request. "
        "Signing per request (before issue "
        "11) answered ~1,690/s here on a quiet machine. Interleaved A/B runs of both "
        "(`--quick --only ocsp`, the machine shared, load 2.5–3.3): 386 and 609 → 1,816 "
        "and 1,915 responses/s (×3.75 on the medians), p99 48 and 30 → 8.5 and 7.6 ms; "
        "busier (load 5–7): 231 and 262 → 626 and 590 (×2.4).",
        "",
        *(
            [
                "Issue 21: relying servers that check OCSP ask on every full handshake. "
                "The uncached path moved from gunicorn to granian (Rust HTTP parsing, "
                "keep-alive; the same WSGI application, the same answers): gunicorn's own "
                "per-request cost (Python HTTP parsing, a TCP connection per request) was "
                "larger than the answer's. On a machine other work shares, responses per "
                "second measure the share of the cores each side got, so each run also "
                "records the CPU time per answer (the server's processes and their "
                "PostgreSQL backends; openssl's one process): "
                + ", ".join(
                    f"{name} {_median_of(ocsp[side], 'cpu_us'):.0f} µs"
                    for side, name in (
                        ("mycert", "MyCert's responder"),
                        ("gunicorn", "gunicorn"),
                        ("nginx", "nginx's cache"),
                        ("openssl", "openssl (signing each answer)"),
                    )
                    if ocsp.get(side) and "cpu_us" in ocsp[side][0]
                )
                + ". nginx answers repeated questions from its cache for 10 s and "
                "never keeps tryLater or another OCSP error "
                "(tests/integration/test_pki_nginx.py).",
                "",
            ]
            if ocsp.get("nginx")
            else []
        ),
        *(
            [
                "Revocation → OCSP: a worker signs the revoked answer once the revocation "
                "commits (the task has a queue of its own, ahead of any issuance backlog); until "
                "then gunicorn answers "
                '`tryLater`, never "good". Over '
                f"{len(ocsp['revocation_latencies_ms'])} revocations one after another: "
                f"p95 {_percentile(ocsp['revocation_latencies_ms'], 95):.0f} ms.",
                "",
            ]
            if ocsp.get("revocation_latencies_ms")
            else []
        ),
        *_relying(data.get("relying") or {}),
    ]

    lines += [
        "## 4. CRL",
        "",
        "The same revoked list four ways, at 1k, 10k and 100k entries (random 159-bit "
        "serials; reasons: 60% superseded, 30% unspecified, 10% keyCompromise with an "
        "invalidity date): MyCert's `crl_publish` (rows from PostgreSQL → signed CRL stored), "
        "the pure `mycert.pki.build_crl` given the entries, `openssl ca -gencrl` over an "
        "index.txt with the same entries and the same issuing CA key (one process per CRL, "
        "key unencrypted so it pays no passphrase KDF), and cryptography's builder fed with "
        "`add_revoked_certificate` in a loop (quadratic: one run only at 100k). Every CRL is "
        "verified with `openssl crl -CAfile` and pyca, and lists exactly the same serials.",
        "",
        "`crl_publish` is timed as production meets it hourly and after each revocation: "
        "in a worker process that did not sign the previous CRL (the process's publication "
        "caches, the previous CRL's evidence and the entry caches, are emptied before each "
        "timed run; the publications after a revocation come first, see below). "
        "It takes what the host's worker that signed the previous CRL recorded on the "
        "host's disk (`mycert.crl_state`, keyed by the CRL's SHA-256, never the database), "
        "copies that CRL's entries as signed bytes, and has PostgreSQL hash the listed "
        "rows: the digest recorded with the previous CRL, so no row is read "
        "(docs/architecture.md « Publishing the CRL »). The median of its runs is the figure, and the goal, at "
        "every size, is half openssl's time with a CRL that openssl and pyca verify. No "
        "revocation happens between the timed runs, so each re-publication re-signs the "
        "same entries as openssl: the hourly publication. The publication right after a "
        "revocation is its own figure (`crl_publish_after_revocation`, informative): before "
        "the other runs at each size, one row is revoked and the CRL published, as many "
        "times as there are runs; the digest differs, so every listed row's serial is read "
        "(and the compromise date of the keyCompromise ones), the new row in full. The cold full rebuild (`full_rebuild=True`, the entry caches "
        "emptied before each run: the first CRL of an issuing CA) is its own figure: every "
        "row read and encoded again. So is the re-publication on another host "
        "(`crl_publish_other_host`: nothing recorded on its disk either), which verifies "
        "the previous CRL and walks its DER for the serials and keyCompromise dates "
        "(`mycert.pki.crl_key_compromises`) before copying it, and records the state for "
        "the host's other processes: the first publication of a host after another "
        "host's, between the re-publication and the full rebuild.",
        "",
        *_img(plots, "crl.png", "CRL"),
    ]
    for size, result in crl.items():
        checks = result["checks"]["crl_publish"]
        lines.append(
            f"- {int(size):,} entries: crl_publish re-publication runs "
            f"{', '.join(f'{x:.0f}' for x in result['crl_publish_ms'])} ms, after a revocation "
            f"{', '.join(f'{x:.0f}' for x in result.get('crl_after_revocation_ms', []))} ms, "
            "on another host "
            f"{', '.join(f'{x:.0f}' for x in result.get('crl_other_host_ms', []))} ms, "
            "full rebuild "
            f"{', '.join(f'{x:.0f}' for x in result.get('crl_full_ms', []))} ms, openssl "
            f"{', '.join(f'{x:.0f}' for x in result['openssl_ms'])} ms; "
            f"MyCert CRL {checks['bytes']:,} bytes, openssl's "
            f"{result['checks']['openssl']['bytes']:,} bytes; verified: openssl "
            f"{'yes' if checks['openssl_verify_ok'] else 'NO'}, pyca "
            f"{'yes' if checks['pyca_signature_ok'] else 'NO'}, same serials "
            f"{'yes' if checks['same_serials'] else 'NO'}."
        )
    lines += [
        "",
        "Where a re-publication of 1k entries goes (perf_counter around each step, in "
        "the figure's own order, each run after `build_crl` and an openssl process, "
        "2026-12-08, in a slow hour of the machine: the bare RSA-3072 signature took "
        "2.8 ms): ~8.7 ms, little of it depending on the size: the high-water mark read "
        "~0.25 ms; one round trip for the lock, the latest CRL's number and SHA-256 and "
        "PostgreSQL's digest of the listed rows ~1.75 ms (PostgreSQL itself ~0.6 ms: the "
        "revoked rows' index read in order ~0.45, the digest, the SHA-256 of the stored "
        "DER); the host's state file read ~0.3 ms; the copy of the entries and the "
        "signature ~3 ms (the RSA-3072 signature 2.8); the INSERT of the DER ~0.9 ms and "
        "the commit (PostgreSQL's fsync) ~0.75 ms; the mark raised ~0.6 ms (an "
        "fdatasync); the state file written ~0.3 ms. The same steps back to back, with "
        "no other process between them, take ~1 ms less, most of it PostgreSQL's "
        "statement. `openssl ca` syncs nothing, and its 15–22 ms that day were mostly a "
        "process starting. What changed in this run (issue 24 §4): PostgreSQL reads the "
        "listed rows in the digest's order from a partial index of the revoked rows alone "
        "(migration 0019), so it neither sorts them nor visits the table (one process, "
        "alternated: 9.8 → 8.8 ms at 1k, 36.5 → 28.7 ms at 10k); the lock is sent with "
        "that statement, one round trip fewer (−0.33 ms); the previous CRL's rows, read "
        "back from the host's record, stay packed when the digest says they did not "
        "change (−0.25 ms); with nothing added, the next CRL's header is not drafted and "
        "signed by a throwaway key any more (−0.17 ms); 1k is timed 31 times and 10k 15 "
        "times, both sides. Before that (the run of b8c69a0, 2026-12-08): the rows' "
        "digest came back with the latest CRL, and the mark and the state file were "
        "rewritten in place. Before that (2026-12-07): when PostgreSQL's digest of the "
        "listed rows is the one recorded with the previous CRL (the hourly case) no row "
        "is read, where one query read every listed serial (~10 ms at 10k, ~100 ms at "
        "100k); the DER is stored uncompressed (pglz spent ~6 ms on each 10,000-entry "
        "CRL, migration 0018). A publication after a revocation still reads the serials. "
        "Earlier still, the same publication re-read and re-encoded every row: "
        "`build_crl` alone was 0.2–0.5× openssl, reading the rows and pyca's "
        "`public_bytes` made it 0.9–1.3×.",
        "",
    ]

    summary = web.get("summary") or {}
    lines += [
        "## 5. Web",
        "",
        f"gunicorn ({web.get('server', 'gunicorn')}) serving MyCert as in production: "
        "collected static files, PostgreSQL sessions (saved on every request: the idle "
        "timeout), CSRF, the request form's rate limit counted in Redis, a reverse proxy in "
        "front (`MYCERT_TRUSTED_PROXY_COUNT=1`, each professional with their own address). "
        "Professionals are logged in by sessions written to the database directly. "
        "`GET /request/` is the form page; `POST /request/` is « Envoyer » (no vendor), each "
        "by a different professional, answered by the redirect to « Demande envoyée. ». "
        "The stack floor is `GET /pki/ca/issuing.cer` (no database, session or template).",
        "",
        f"Two loads, {web.get('clients', 50)} clients each: *users* — each keeps a "
        "connection (a new one whenever gunicorn's sync workers close it after an answer) "
        "and pauses between requests (exponential think time, mean "
        f"{web.get('think_seconds', 1.0):.0f} s), as people at their desks do (Python "
        "asyncio client); *saturation* — wrk, the same number of connections, no pause. In "
        "a closed loop without pause the latency is the queue: 50 clients ÷ throughput "
        "(Little's law), so p95 ≤ 50 ms would need ~1,000 pages per second on 2 cores "
        "shared with PostgreSQL; the goal is read on the users' load, and the saturation "
        "figures give the capacity. Before measuring, both loads are warmed up, form "
        "submissions included: the first submission in each web process imports Celery's "
        "publishing side and connects to the broker (~0.3 s, seen with py-spy), once per "
        "process start.",
        "",
        *_img(plots, "web.png", "web"),
    ]
    for mode in ("users", "closed"):
        for what in ("floor", "page", "post"):
            s = (summary.get(mode) or {}).get(what)
            if s:
                lines.append(
                    f"- {mode}, {what}: p50 {s['p50']:.1f} ms, p95 {s['p95']:.1f} ms, "
                    f"p99 {s['p99']:.1f} ms, {s['rps']:.0f}/s, errors {s['errors']}"
                )
    lines += [""]
    lines += scale(data)
    lines += fixes() + remains(data)
    return lines


def scale(data: dict[str, Any]) -> list[str]:
    """Issue 24 §5: the OCSP refresh, beat's tasks and the admin at 100,000 certificates."""
    found = data.get("scale")
    if not found:
        return []
    loaded, refresh = found["loaded"], found["refresh"]
    beat, admin = found["beat"], found["admin"]
    lines = [
        f"## {loaded['certificates']:,} certificates: OCSP refresh, beat, admin",
        "",
        "`benchmarks/fig_scale.py` loads the rows with PostgreSQL's `COPY` in "
        f"{loaded['load_seconds']:.0f} s: per certificate its professional and user, its "
        "request (« sent »), its keystore and password e-mails (sent, payload wiped; one in "
        "four with the vendor's two), one audit event and one stored OCSP answer "
        f"({loaded['deliveries']:,} e-mails, {loaded['ocsp_answers']:,} answers in all). "
        f"What is real: {loaded['really_signed']} certificates are signed by the run's "
        "issuing CA with the production profile, and every row carries one of their PEMs "
        "with its own random serial and fingerprint, so rows have their real sizes; the "
        f"stored answers reuse {loaded['really_signed']} really signed ones, their "
        "thisUpdate spread evenly over the refresh age as beat leaves them; 1 % of the "
        "certificates are revoked, ~15 % expired (their last answer kept), the rest valid; "
        "names are common Luxembourg names, so a search by a family name finds hundreds. "
        "Everything then measured runs MyCert's own code on those rows.",
        "",
        "### The OCSP pre-signing refresh",
        "",
        f"{len(refresh['runs'])} runs of `ocsp_responses_refresh`, "
        f"{60 / refresh['runs_per_hour']:.0f} minutes apart in simulated time, as beat "
        "runs them (`refresh-ocsp-responses`): every answer found due is really signed "
        "(both CertID hashes) and stored. CPU is this process's (the worker's) and its "
        "PostgreSQL backend's, read from /proc; per hour it is the median run × "
        f"{refresh['runs_per_hour']:.0f} runs. Each run re-signs the answers older than "
        f"the refresh age ({refresh['validity_min']:.0f} min validity: "
        f"{refresh['worst_age_min']:.0f} min at the oldest, the refresh age plus one beat "
        f"period); {refresh['cpu_per_answer_ms']:.2f} ms of CPU per certificate. The goal: "
        "at most 10 % of one core for the refresh, and the oldest answer a relying party "
        "can get younger than the validity minus the alarm margin "
        f"(`ocsp_alarm_margin`, {refresh['alarm_margin_min']:.0f} min), so that the alarm "
        "never rings in the steady state.",
        "",
        "### Beat's tasks",
        "",
        "Each entry of `CELERY_BEAT_SCHEDULE` is run once, in this process, as a worker "
        "runs it; every statement it sends is captured and run again under `EXPLAIN "
        "(ANALYZE, BUFFERS)`. A task that runs every 15 minutes or more often and reads a "
        "whole big table (a Seq Scan on certificates, requests, e-mails, audit, answers, "
        "professionals or users) misses its goal; the hourly and daily ones are reported.",
        "",
        "| task | every | statements | ms | whole-table reads |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for name, task in beat.items():
        lines.append(
            f"| {name} | {task['every_s']:.0f} s | {task['queries']} | {task['ms']:.0f} | "
            f"{', '.join(task['seq_scans']) or 'none'} |"
        )
    lines += [
        "",
        "`refresh-ocsp-responses` asked for the due answers with one OR across the join of "
        "certificates and answers, which PostgreSQL can only answer by reading every "
        "certificate row, its PEM included, every five minutes. It now asks three "
        "questions, each through an index (live answers by `this_update`, revoked "
        "certificates by `revoked_at`, certificates without an answer by an anti-join of "
        "the two primary keys), and `tests/test_scale_queries.py` counts the certificate "
        "rows the plans read. The answers of certificates past their end are no longer "
        "re-signed but stay stored: marked once (`certificate_expired`, migration 0017) "
        "they leave the refresh's partial index, which would otherwise grow by every "
        "certificate that ever expired (~a third of the population a year). The health "
        "probe and /metrics, which ask every few seconds for the nearest nextUpdate, "
        "joined every answer to its certificate; they now walk the live answers' "
        "`next_update` index from the nearest. The "
        "anti-join still reads both primary keys whole (index-only, ~2 MB each at "
        "100,000, no row). `supersede-certificates` (hourly) reads the valid certificates "
        "by nature; `send-expiry-reminders` (daily) writes one transaction per reminder.",
        "",
        "### The admin's certificate list and search",
        "",
        "Django's test client, in this process, signed in at /admin/ as a helpdesk agent "
        "with a password and a TOTP code (the production login); each page is asked once "
        "to warm up, then 20 times; p95 by nearest rank. The goal: p95 ≤ 500 ms, a page "
        "the helpdesk does not wait for.",
        "",
        "| page | p50 ms | p95 ms | statements | SQL ms | whole-table reads |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for page in admin.values():
        lines.append(
            f"| `{page['url']}` | {page['p50_ms']:.0f} | {page['p95_ms']:.0f} | "
            f"{page['queries']} | {page['sql_ms']:.0f} | "
            f"{', '.join(page['seq_scans']) or 'none'} |"
        )
    lines += [
        "",
        "Before issue 24 at 100,000 certificates the list took 1.7 s (p95) and a search "
        "2.4–3.6 s: Django's search ORs its six fields across the join to professionals "
        "(every certificate read), `date_hierarchy` lists the years with a DISTINCT over "
        "every certificate, `RelatedOnlyFieldListFilter` finds the vendors with another, "
        "and each search counted the whole table a second time. Now each search word is "
        "a union of indexed questions (pg_trgm indexes on the professionals' names, "
        "identifier and e-mail, so a part of one still matches; a pattern index for a "
        "serial's beginning; a whole fingerprint by its unique index), the vendor filter "
        "asks the vendors, a filter by period replaces `date_hierarchy`, "
        "`show_full_result_count` is off, and the list's order has its index "
        "(migration 0016). A search of names only (« marie schmit », the common case) "
        "finds the professionals who match every word in one query and hands their ids "
        "to the list: given a subquery, PostgreSQL guessed thousands of matches and "
        "walked the whole list newest first to fill a page of a few. What is left: a "
        "search by one very common word (a given name alone, ~10 % of everyone) sorts "
        "thousands of certificates; a later page walks the list's index up to its "
        "offset; the unfiltered list counts every certificate (a COUNT(*) of ~20 ms).",
        "",
    ]
    return lines


def fixes() -> list[str]:
    return [
        "## What was changed in MyCert for these figures",
        "",
        "Each is its own commit with a test (the workers' change is covered by the existing "
        "fault tests on real processes); each was found by profiling the real processes "
        "with py-spy (workers, gunicorn) and pyinstrument (services in-process).",
        "",
        "1. **Workers opened a database connection per task** (`config/celery.py`, "
        "`CELERY_DB_REUSE_MAX`). Celery's Django fix-up closed the connection before and "
        "after every task: each issuance and each e-mail opened a new PostgreSQL connection "
        "(a server process and its authentication), about five per certificate, visible as "
        "`psycopg connect` in the workers' profiles. Workers now follow Django's request "
        "rules (`CONN_MAX_AGE`, a health check before the first use in a task); the fault "
        "tests (sessions dropped, Redis restarted, worker killed) pass. On 150 EC requests "
        "the batch went from ~30 s to ~19 s on the (then busy) machine.",
        "2. **One gpg process per encrypted e-mail instead of four** (`mycert/mail/gpg.py`). "
        "The vendor's key text was scanned, imported and listed before every encryption; "
        "that is now done once per key text per process (a changed text is imported again; "
        "expiry is still checked at every send; gpg refuses an unusable key anyway). Three "
        "gpg processes fewer per vendor copy (each a fork and exec of gpg).",
        "3. **OCSP asks the database once per request** (`mycert/views/pki.py`). With "
        "`CONN_HEALTH_CHECKS` each request's first query was preceded by `SELECT 1`; the "
        "OCSP view skips that check and retries once on a fresh connection if the kept one "
        "is broken (a test breaks it). Interleaved A/B runs: 731 and 740 → 846 and 1,014 "
        "responses/s (threaded workers, busy machine). Then gunicorn's sync workers, "
        "measured faster here than threaded ones, took it to ~1,700/s.",
        "4. **CRL entries are built once per process** (`mycert/pki/crl.py`, "
        "`mycert/services/publication.py`, `mycert/pki/_checks.py`). Re-signing reuses, per "
        "row value, the `RevokedEntry` and its pyca object (revocation columns change only "
        "by a new value, which is a new key), and UTC times from the database pass through "
        "unconverted: 30k entries from the database, ~600 ms the first time, ~300 ms when "
        "re-signing; 50k, ~540 → ~400 ms warm after the second change.",
        "5. **A CRL is re-published over the previous one** (`mycert/pki/crl.py` "
        "`build_next_crl`, `mycert/services/publication.py`). Its entries are copied as the "
        "CA signed them; only the rows' serials are read, and the new or changed rows in "
        "full (docs/architecture.md « Publishing the CRL »). Measured with "
        "`--only crl`: 1k, 10k, 100k entries at 1.07, 1.28, 0.84× openssl in the last "
        "complete run before; §4 for now.",
        "",
    ]


def _cpu_table(population: dict[str, Any]) -> list[str]:
    """Where the CPU of each population run went, per request."""
    runs = {k: v for k, v in population.items() if v.get("cpu_ms_per_request")}
    if not runs:
        return []
    parts = list(next(iter(runs.values()))["cpu_ms_per_request"])
    lines = [
        "CPU used while the clock ran, per request, by the processes sharing the 2 cores "
        "(proc(5) user + system time; the workers' figure holds key generation and "
        "everything else MyCert does in them):",
        "",
        "| per request | " + " | ".join(runs) + " |",
        "|---|" + "---|" * len(runs),
    ]
    for part in parts:
        lines.append(
            f"| {part} | "
            + " | ".join(f"{r['cpu_ms_per_request'][part]:.1f} ms" for r in runs.values())
            + " |"
        )
    lines.append(
        "| **total** | "
        + " | ".join(f"**{sum(r['cpu_ms_per_request'].values()):.1f} ms**" for r in runs.values())
        + " |"
    )
    lines.append(
        "| bare pipeline (the reference's cost) | "
        + " | ".join(f"{r['bare_mean_ms']:.1f} ms" for r in runs.values())
        + " |"
    )
    lines.append("")
    return lines


def _reference(population: dict[str, Any]) -> list[str]:
    """How the population's reference is measured, and what the sampling saves."""
    goal = population.get("rsa-3072") or next(iter(population.values()), None)
    if not goal or "reference_sample" not in goal:
        return []
    n, sample = goal["count"], goal["reference_sample"]
    runs = len(goal.get("runs") or [goal])
    # Seconds the full-N references would have added to the run, all runs together.
    saved = runs * (goal["reference_seconds"] - goal["reference_sample_seconds"])
    return [
        "Reference, measured in the population's conditions (issue 24 §2): right after each "
        "population run, the bare pipeline (`benchmarks/bare.py`: keygen, the revocation "
        "code's scrypt, sign, PKCS#12) runs in two fresh processes at once, as the two "
        f"workers share the two cores, on {sample} of the N = {n} certificates (half each); "
        "the slower process's time is scaled to N. A sample, not all N, keeps the goal's "
        f"{runs} runs within the run's budget (full references would add about "
        f"{saved / 60:.0f} minutes); the {runs} samples together cover {runs * sample} keys. "
        "It counts no database, no e-mail, no OpenPGP and no SMTP server — all of which share "
        f"the same 2 cores here. RSA-3072, the goal, runs {runs} times, each with its own "
        "reference: the figure is the run of median ratio, and the table gives the spread "
        f"(min–max) of the {runs} ratios.",
        "",
    ]


def floor(data: dict[str, Any]) -> list[str]:
    """§2's delivery floor: the EC population against the least its work can cost."""
    result = data.get("population_floor")
    figure = _figure(data, "population.ec-p256.delivery-floor")
    if not result or not figure:
        return []
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result["stages"].items())
    sizes = result["text_sizes"]
    return [
        "",
        "### The bare delivery floor (EC P-256)",
        "",
        "What delivering the population's certificates costs at the least, with no MyCert "
        "code (`benchmarks/floor.py`, issue 24 §3), run right after each EC P-256 population "
        "on the same N in two processes at once (as the two workers; as many runs as "
        "RSA-3072's, the figure is the run of median ratio): per certificate the "
        "bare pipeline; the MIME messages built with the standard library's `email` "
        f"(text parts of MyCert's sizes, read from its own messages of this run: "
        f"{sizes['keystore']} and {sizes['password']} characters; the keystore attached); "
        "every other certificate, as in the population, the vendor's two copies encrypted "
        "by python-gnupg the way MyCert calls gpg (`always_trust`, armored, "
        "`--no-encrypt-to`, one gpg process each, in the workers' keyring); every message "
        "over SMTP to the same sink process, on one kept connection per process; one INSERT "
        "and one UPDATE, autocommitted, through psycopg on the run's PostgreSQL. MyCert does "
        "more than this floor by design (the outbox's record transaction, the "
        "audit chain, the pre-signed OCSP answer, the key listing before each encryption, "
        "Celery): the goal leaves it 1.5×.",
        "",
        f"- {result['count']} certificates, {result['emails']} e-mails: {result['seconds']:.1f} s "
        f"(the slower process; seconds of both processes per stage: {stages}); the EC "
        f"population took {figure['value']:.1f} s, {figure['ratio']:.2f}×"
        + (
            " (each run against its own floor: "
            + ", ".join(f"{r:.2f}×" for r in result["ratios"])
            + ")."
            if result.get("ratios")
            else "."
        ),
    ]


def growth(data: dict[str, Any]) -> list[str]:
    """§5: the per-certificate time once the database holds ten populations."""
    result = data.get("population_growth")
    figure = _figure(data, "population.growth.ec-p256")
    if not result or not figure:
        return []
    loaded = result["bulk_loaded"]
    n = result["count"]
    return [
        "",
        "### Growth (EC P-256)",
        "",
        f"The per-certificate time of {n} EC P-256 requests, issued for real by the two "
        f"workers from submission to the last e-mail, first on a database holding "
        f"{result['start_certificates_before']:,} certificates (figure 1's), then, in the "
        f"same run, on one holding {result['grown_certificates_before']:,}: "
        f"{figure['reference']:.1f} ms and {figure['value']:.1f} ms, {figure['ratio']:.2f}× "
        f"(issue 24 §5, goal ≤ 1.1×). Of the certificates before the second batch, "
        f"{result['issued_for_real_before_load']:,} were issued for real by this run (figure 1, "
        f"the populations above); the other {loaded['certificates']:,} are copies "
        "bulk-loaded in "
        f"{result['bulk_load_seconds']:.0f} s by `benchmarks/bulk_load.py`: the rows that the "
        f"first {n} real issuances wrote (user, professional, request, certificate, "
        "deliveries, OCSP answer, audit events), inserted again through the models with "
        "fresh unique values and the audit events chained onto the chain's head, without "
        "the 13 minutes of cryptography ("
        + ", ".join(f"{v:,} {k}" for k, v in loaded.items())
        + "). The certificate and OCSP bytes of the copies are a real certificate's. The "
        "loaded tables are then VACUUMed and ANALYZEd and PostgreSQL checkpoints, before the "
        "second batch's clock starts: autovacuum and the checkpointer would have done so "
        "long before in a database that grew over months, and the second batch must not pay "
        "for the load (the first reader of a row never read sets its hint bits and dirties "
        "its page).",
        *_growth_against_references(figure),
        *_growth_cpu(data, result),
    ]


def _growth_against_references(figure: dict[str, Any]) -> list[str]:
    details = figure.get("details") or {}
    if "growth_against_references" not in details:
        return []
    return [
        "",
        "Each batch was followed by its reference, the bare pipeline in two processes on "
        "the same machine at that moment (as for the population figure): the first batch "
        f"took {details['ratio_to_reference_start']:.2f}× its reference, the second "
        f"{details['ratio_to_reference_grown']:.2f}×, "
        f"{details['growth_against_references']:.2f}× the first's. The goal is stated on "
        "the raw times above; this ratio of ratios removes what the other processes on the "
        "two cores did to both.",
    ]


def _growth_cpu(data: dict[str, Any], result: dict[str, Any]) -> list[str]:
    """Where the time per certificate went in each batch: CPU per request, by process."""
    start = ((data.get("population") or {}).get("ec-p256") or {}).get("cpu_ms_per_request")
    grown = (result.get("grown") or {}).get("cpu_ms_per_request")
    if not start or not grown:
        return []
    parts = ", ".join(
        f"{part} {start[part]:.1f} → {grown[part]:.1f} ms" for part in grown if part in start
    )
    return [
        "",
        f"CPU per request, first batch → second: {parts}. The workers' CPU is what MyCert's "
        "own statements and Python cost per certificate; PostgreSQL's counts every postgres "
        "process on the machine; the SMTP sink's and gpg's do not depend on the database, so "
        "a change in theirs is the machine's speed (other processes on the two cores), not "
        "growth. `tests/test_scale_issuance.py` checks that every statement of an issuance "
        "reads a handful of rows of each table with ten times the issuances.",
    ]


def remains(data: dict[str, Any]) -> list[str]:
    missed = [f for f in data["figures"] if f["met"] is False]
    lines = ["## What remains, and why", ""]
    if not missed:
        lines += ["Every goal was met in this run.", ""]
        return lines
    for f in missed:
        lines.append(f"- **{f['title']}**: {f['ratio']:.2f}× against {f['goal']}.")
    pop = (data.get("population") or {}).get("rsa-3072")
    crl100 = (data.get("crl") or {}).get("100000")
    lines += [""]
    if pop and pop["elapsed_seconds"] > 1.3 * pop["reference_seconds"]:
        lines.append(_population_remains(pop))
    missed_keys = {f["key"] for f in missed}
    floor_result = data.get("population_floor")
    if floor_result and "population.ec-p256.delivery-floor" in missed_keys:
        figure = _figure(data, "population.ec-p256.delivery-floor") or {}
        per = 1000 * figure["value"] / floor_result["count"]
        per_floor = 1000 * floor_result["seconds"] / floor_result["count"]
        lines.append(
            f"- *EC population against its floor*: {per:.1f} ms per certificate against "
            f"{per_floor:.1f} ms for the bare delivery; the difference is what MyCert adds "
            "beyond the floor's INSERT and UPDATE and the e-mail itself (the submission's "
            "transaction, Celery, the outbox's record, the audit events, the "
            "pre-signed OCSP answer, the key listing before each gpg encryption), per "
            "certificate, on the same two cores."
        )
    growth_result = data.get("population_growth")
    if growth_result and "population.growth.ec-p256" in missed_keys:
        figure = _figure(data, "population.growth.ec-p256") or {}
        lines.append(
            f"- *Growth*: {figure['value']:.1f} ms per certificate with "
            f"{growth_result['grown_certificates_before']:,} certificates before the batch, "
            f"against {figure['reference']:.1f} ms with "
            f"{growth_result['start_certificates_before']:,}. No statement of an issuance "
            "reads more rows as the tables grow (`tests/test_scale_issuance.py`); the CPU per "
            "request of each process, first batch against second (« Growth (EC P-256) »), "
            "tells MyCert's own work from the machine's speed during the two batches."
        )
    lines.append(
        "- *OCSP*: answers are stored and served as bytes (§3); what remains per request is "
        "the Python application under granian and one PostgreSQL round trip (a libpq call "
        "to a prepared statement). An in-process cache "
        'of answers would remove the round trip but could serve "good" after a committed '
        "revocation (docs/architecture.md « Publication: the CRL and pre-signed OCSP »), so it "
        "was not done."
    )
    crl_missed = any(f["key"] == "crl.100000.crl_publish" for f in missed)
    if crl100 and crl_missed:
        runs = crl100["crl_publish_ms"]
        lines.append(
            f"- *CRL at 100k*: re-publication takes {min(runs):.0f}–{max(runs):.0f} ms "
            f"against openssl's "
            f"{min(crl100['openssl_ms']):.0f}–{max(crl100['openssl_ms']):.0f} ms; the pure build is "
            f"{min(crl100['build_crl_ms']):.0f} ms, the rest reading the rows and storing the "
            f"{crl100['checks']['crl_publish']['bytes'] / 1e6:.1f} MB CRL."
        )
    lines.append(
        "- *Web at saturation*: the page costs ~7 ms of a core (11 queries, among them the "
        "session's load and its save on every request — the idle timeout — and the "
        "professional looked up twice; the template); 50 clients without pause queue "
        "behind each other (§5). With people's pauses, p95 is far below the goal."
    )
    lines += [""]
    return lines


def roundtrips(data: dict[str, Any]) -> list[str]:
    """Statements and round trips per request, before and after the batched outbox."""
    counted = data.get("roundtrips")
    if not counted:
        return []
    from benchmarks.roundtrips import BEFORE

    lines = [
        "Database work per request, counted (not timed: `python -m benchmarks.roundtrips`), "
        "from the submission to the last e-mail recorded, BEGIN and COMMIT counted as round "
        "trips. *Before*: the commit before the outbox became a leaf (one claim and one "
        "record transaction per e-mail, the request closed and older certificates revoked "
        "inside the last record). *After*: one claim, one relay session and one record for "
        "a certificate's e-mails, the four rows written in two INSERTs, the request closed "
        "in the transaction that records its last e-mail (its event in the same audit "
        "INSERT).",
        "",
        "| per request | statements | transactions | round trips |",
        "| --- | --- | --- | --- |",
    ]
    for label, after in counted.items():
        before = BEFORE[label]
        lines.append(
            f"| {label} | {before['statements']} → {after['statements']:.0f} "
            f"| {before['transactions']} → {after['transactions']:.0f} "
            f"| {before['round trips']} → {after['round trips']:.0f} |"
        )
    return [*lines, ""]


def _population_remains(pop: dict[str, Any]) -> str:
    """Why the population misses 1.3×: the CPU the goal leaves against what was used."""
    n = pop["count"]
    bare = pop.get("bare_mean_ms")
    two = pop["bare_two_processes_seconds_per_certificate"]
    # What a certificate's bare pipeline costs a process when two run at once, as the
    # workers do: the reference's own per-certificate cost.
    bare_at_two = 2 * two * 1000
    budget = 0.3 * bare_at_two
    text = (
        f"- *Population* ({pop['elapsed_seconds']:.0f} s against {pop['reference_seconds']:.0f} s): "
        f"at 1.3× the run may spend 0.3 × {bare_at_two:.0f} ms = {budget:.0f} ms of a worker "
        "per request beyond the bare pipeline, for everything else on the two cores: the "
        "submission, the database, the outbox, three e-mails (one OpenPGP-encrypted on "
        "average), the SMTP server that stores them."
    )
    if bare:
        text += (
            f" (One bare pipeline alone, figure 1: {bare:.0f} ms; two at once cost "
            f"{bare_at_two:.0f} ms each.)"
        )
    cpu = pop.get("cpu_ms_per_request") or {}
    if cpu:
        total = sum(cpu.values())
        busy = total * n / 1000 / (2 * pop["elapsed_seconds"])
        others = ", ".join(f"{k} {v:.1f} ms" for k, v in cpu.items() if k != "workers")
        text += (
            f" Measured (the table in §2): {total - bare_at_two:.0f} ms per request beyond the "
            f"bare pipeline, of which {cpu['workers'] - bare_at_two:.0f} ms in the workers "
            f"(database client, outbox, MIME, SMTP, Celery) and, beside them, {others}; and the "
            f"two cores were busy {busy:.0%} of the run. The rest is waiting, mostly a worker "
            "waiting for PostgreSQL's answer (the round trips per request are counted in §2) "
            "while the other core generates a key. What MyCert did about it: the issuing task "
            "sends its own e-mails (no task per e-mail), one SMTP session per worker, a "
            "certificate's e-mails claimed, sent and recorded as one batch, no savepoints, the "
            "audit lock held for less, one gpg process per encrypted e-mail, database "
            "connections kept by the workers, one plain UPDATE to lease a batch and one to "
            "record it (Django's bulk_update built a CASE per row and field, dearer to compile "
            "than to run), a batch's audit events in one INSERT after one lock and one read of "
            "the chain's end, the request closed in the record's transaction (one transaction and "
            "one audit INSERT fewer per certificate), the claim reading the awaited e-mail's "
            "status as one column, one-line headers written without the standard library's "
            "folding machinery, non-ASCII subjects encoded in one pass (the standard library's "
            "encoder is quadratic), no NOOP before each e-mail on the kept relay session (its "
            "MAIL FROM tells a closed session), the issuer's transaction writing the e-mails "
            "leased to its worker, which sends them without a claim (one transaction, one "
            "SELECT over four joins and one UPDATE fewer per certificate), multipart boundaries "
            "checked by a plain search (the standard library compiles a regular expression for "
            "each random boundary), the audit chain's end read by a statement compiled once per "
            "process. Measured and not taken: prepared statements on the workers' connections "
            "(psycopg's server-side binding): PostgreSQL's CPU per request went 8.9 → "
            "6.6 ms but the workers' rose by about 2 ms, a gain of about 1% on this one machine "
            "and a loss where the database has a host of its own. What is left is the "
            "e-mail work itself (MIME, gpg, the relay storing it) and one short transaction to "
            f"record a certificate's e-mails, which the outbox's guarantees need: {n:,} of them. Where "
            "a worker's own CPU goes, function by function: `python -m benchmarks.worker_profile`."
        )
    return text


def _relying(relying: dict[str, Any]) -> list[str]:
    """How long each server of the relying-party kit keeps accepting a revoked certificate."""
    servers = relying.get("servers") or {}
    if not servers:
        return []
    labels = {"nginx": "nginx", "apache": "Apache httpd", "python": "the Python server"}
    figures = "; ".join(
        f"{labels.get(name, name.capitalize())} {values['p50']:.2f} / {values['p95']:.2f} / "
        f"{values['p99']:.2f} s"
        for name, values in servers.items()
    )
    stagger = relying.get("stagger_seconds")
    overlap = (
        f"The revocations overlap, one every {stagger:g} s while the earlier ones are still "
        "probed: the Python server keeps an answer 30 s, so one after the other they took "
        f"about {relying['count']} × 30 s; overlapped, about 30 s + {relying['count']} × "
        f"{stagger:g} s. Each sample is still one certificate's own time; the cost is "
        f"load: up to about {30 / stagger:.0f} certificates are probed at once (mostly "
        "waiting out the Python server's cache), about "
        f"{30 / stagger / relying.get('poll_seconds', 0.25):.0f} TLS handshakes a second "
        "on the cores the servers use, so the other servers' times under overlap include "
        "that contention. "
        if stagger
        else ""
    )
    return [
        "Revocation → relying servers refuse (`revocation.relying.<server>.p99`, issue 21): "
        "the kit's four servers as shipped (deploy/: nginx, Apache httpd, the Python "
        "server, the Java service), each asking MyCert's OCSP responder about the whole "
        f"chain at every new connection. {relying['count']} certificates: each is accepted "
        "by every server just before its revocation (any cache warm, a professional at "
        "work), revoked in the admin (the revoke action's confirmation POST), then each "
        "server is asked with a new TLS connection (curl with the keystore) every "
        f"{relying.get('poll_seconds', 0.25)} s until it refuses; the clock runs from the "
        f"revoking POST to that first refusal. {overlap}p50 / p95 / p99: {figures}.",
        "",
    ]


def _percentile(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(q / 100 * len(ordered)) - 1)]


def _median_of(runs: list[dict[str, Any]], key: str) -> float:
    values = sorted(run[key] for run in runs)
    return (
        values[len(values) // 2] if len(values) % 2 else sum(values[len(values) // 2 - 1 :][:2]) / 2
    )
