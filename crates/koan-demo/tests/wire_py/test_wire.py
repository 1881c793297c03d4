"""docs/wire.md, spoken from Python with nats-py to a real `koan-demo --nats` on a real
`nats-server -js`: calls, errors, queries, durable jobs and their outcomes, idempotent
repeats, refusals of other wire versions, events and the registry.

Run with: bash scripts/test-wire-python.sh   (builds koan-demo, makes the venv)
"""

import asyncio
import json
import sqlite3
import sys
import time
import unittest
import uuid

import jsonschema
import nats
from nats.js.errors import KeyNotFoundError

from harness import PATIENCE, Cluster, repo_root

CLUSTER = None

SERVICE = "TranslationService"
CALL = "koan.svc.translationservice.act.translate"
WORK = "koan.work.translationservice.translate"
DEAD = "koan.dlq.translationservice.translate"


SCHEMAS = repo_root() / "docs" / "wire"


def conforms(name, value):
    """`value`, checked against docs/wire/<name>.schema.json."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.validate(value, schema, format_checker=jsonschema.FormatChecker())
    return value


def body(reply, ok_schema=None):
    """A reply's body, checked against the reply schema (and its `ok` against `ok_schema`)."""
    value = conforms("reply", json.loads(reply.data))
    if ok_schema and "ok" in value:
        conforms(ok_schema, value["ok"])
    return value


def token(name):
    """A name as a subject's token (docs/wire.md, Names)."""
    allowed = "abcdefghijklmnopqrstuvwxyz0123456789_-"
    return "".join(c if c in allowed else "_" for c in name.lower())


def translations_of(file_id):
    """Rows the demo stored for `file_id`: one per run of `translate`."""
    with sqlite3.connect(CLUSTER.db, timeout=10) as db:
        return db.execute(
            "SELECT COUNT(*) FROM translations WHERE file_id = ?", (file_id,)
        ).fetchone()[0]


async def eventually(what, check, patience=PATIENCE):
    """Awaits `check()` until it returns something truthy, at most `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {patience}s waiting for {what}")
        await asyncio.sleep(0.02)


class Wire(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.nc = await nats.connect(CLUSTER.url)
        self.js = self.nc.jetstream()
        self.outcomes = await self.js.key_value("koan_outcomes")

    async def asyncTearDown(self):
        await self.nc.close()

    async def call(self, params, headers=None, subject=CALL):
        payload = params if isinstance(params, bytes) else json.dumps(params).encode()
        return await self.nc.request(subject, payload, timeout=PATIENCE, headers=headers)

    async def outcome(self, job_id):
        async def stored():
            try:
                entry = await self.outcomes.get(job_id)
            except KeyNotFoundError:
                return None
            return conforms("outcome", json.loads(entry.value))

        return await eventually(f"the outcome of job {job_id}", stored)

    # Calls

    async def test_a_call_answers_with_its_result_and_echoes_the_correlation_id(self):
        reply = await self.call(
            {"fileId": "py-call", "from": "en", "to": "es"},
            headers={"Koan-Wire": "1", "Koan-Correlation-Id": "py-call-1"},
        )
        self.assertEqual(reply.headers.get("Koan-Wire"), "1")
        self.assertEqual(reply.headers.get("Koan-Correlation-Id"), "py-call-1")
        result = body(reply)["ok"]
        self.assertEqual(result["fileId"], "py-call")
        self.assertEqual(result["text"], "hola mundo el archivo es listo")

    async def test_a_call_without_headers_works_and_is_given_a_correlation_id(self):
        reply = await self.call({"fileId": "py-bare", "from": "en", "to": "fr"})
        self.assertTrue(reply.headers.get("Koan-Correlation-Id"))
        self.assertEqual(body(reply)["ok"]["fileId"], "py-bare")

    async def test_a_call_on_the_instances_bare_subject_gets_the_body_alone(self):
        registry = await self.js.key_value("koan_registry")
        host = (await registry.keys())[0]
        subject = f"koan.host.{token(host)}.svc.translationservice.bare.translate"
        params = {"fileId": "py-bare-subject", "from": "en", "to": "fr"}
        reply = await self.call(params, headers={"Koan-Correlation-Id": "py-b-1"}, subject=subject)
        self.assertFalse(reply.headers, "a bare reply has no headers")
        self.assertEqual(body(reply)["ok"]["fileId"], "py-bare-subject")
        # Without a correlation id, the reply is full: it names the id made for the call.
        reply = await self.call(params, subject=subject)
        self.assertEqual(reply.headers.get("Koan-Wire"), "1")
        self.assertTrue(reply.headers.get("Koan-Correlation-Id"))
        self.assertEqual(body(reply)["ok"]["fileId"], "py-bare-subject")
        # The id as one more token of the subject: no header at all, a bare reply.
        reply = await self.call(params, subject=f"{subject}.py-b-2")
        self.assertFalse(reply.headers, "a bare reply has no headers")
        self.assertEqual(body(reply)["ok"]["fileId"], "py-bare-subject")
        # On the lead subject, the id is the body's first line: a bare reply.
        lead = subject.replace(".bare.", ".lead.")
        reply = await self.call(b"py-l-1\n" + json.dumps(params).encode(), subject=lead)
        self.assertFalse(reply.headers, "a bare reply has no headers")
        self.assertEqual(body(reply)["ok"]["fileId"], "py-bare-subject")
        # A body without that line is refused, saying what the subject expects.
        reply = await self.call(params, subject=lead)
        self.assertEqual(body(reply)["error"], "invalid_parameters")
        self.assertIn("starts its body with its correlation id", body(reply)["message"])

    async def test_errors_come_back_as_error_and_message(self):
        cases = [
            (CALL, {"fileId": "x", "from": "en"}, {}, "invalid_parameters", "to"),
            (CALL, b"{not json", {}, "invalid_parameters", "not valid JSON"),
            (
                CALL,
                {"fileId": "x", "from": "en", "to": "es"},
                {"Koan-Priority": "high"},
                "invalid_parameters",
                "Koan-Priority",
            ),
            (
                "koan.svc.translationservice.act.no-such-action",
                {},
                {},
                "unknown_action",
                "no-such-action",
            ),
        ]
        for subject, params, headers, code, named in cases:
            with self.subTest(subject=subject, params=params, headers=headers):
                reply = await self.call(
                    params, headers={"Koan-Correlation-Id": "py-err", **headers}, subject=subject
                )
                answer = body(reply)
                self.assertEqual(answer.get("error"), code, answer)
                self.assertIn(named, answer["message"])
                self.assertNotIn("ok", answer)
                self.assertEqual(reply.headers.get("Koan-Correlation-Id"), "py-err")

    async def test_another_wire_version_is_refused_with_a_clear_error(self):
        for subject in (CALL, "koan.svc.translationservice.query.status"):
            with self.subTest(subject=subject):
                reply = await self.call(
                    {"fileId": "never", "from": "en", "to": "es"},
                    headers={"Koan-Wire": "2", "Koan-Correlation-Id": "py-v2"},
                    subject=subject,
                )
                answer = body(reply)
                self.assertEqual(answer["error"], "unsupported_wire_version")
                self.assertIn("Koan-Wire version 1", answer["message"])
                self.assertEqual(reply.headers.get("Koan-Wire"), "1")
                self.assertEqual(reply.headers.get("Koan-Correlation-Id"), "py-v2")
        self.assertEqual(translations_of("never"), 0, "a refused call runs nothing")

    # Queries

    async def test_status_health_and_info_queries(self):
        status = body(
            await self.call(b"", subject="koan.svc.translationservice.query.status"), "status"
        )
        self.assertEqual(status["ok"]["name"], SERVICE)
        self.assertEqual(status["ok"]["state"], "running")
        self.assertIn("queue_depth", status["ok"])
        health = body(
            await self.call(b"", subject="koan.svc.translationservice.query.health"), "health"
        )
        self.assertIn("status", health["ok"])
        info = body(
            await self.call(b"", subject="koan.svc.translationservice.query.info"), "info"
        )
        actions = {a["name"]: a for a in info["ok"]["actions"]}
        self.assertIn("fileId", actions["translate"]["params_schema"]["properties"])
        unknown = body(await self.call(b"", subject="koan.svc.translationservice.query.mood"))
        self.assertEqual(unknown["error"], "invalid_parameters")
        self.assertIn("status", unknown["message"])

    # Durable jobs

    async def test_a_durable_job_runs_and_its_outcome_is_stored_under_its_id(self):
        job_id = str(uuid.uuid4())
        ack = await self.js.publish(
            WORK,
            json.dumps({"fileId": "py-job", "from": "en", "to": "fr"}).encode(),
            headers={"Nats-Msg-Id": job_id, "Koan-Wire": "1", "Koan-Correlation-Id": "py-job-1"},
        )
        self.assertEqual(ack.stream, "KOAN_WORK")
        self.assertFalse(ack.duplicate)
        outcome = await self.outcome(job_id)
        self.assertEqual(outcome["id"], job_id)
        self.assertEqual(outcome["attempts"], 1)
        self.assertTrue(outcome["host"])
        self.assertEqual(outcome["ok"]["fileId"], "py-job")
        self.assertEqual(translations_of("py-job"), 1)

    async def test_the_same_job_id_twice_is_one_job_and_one_run(self):
        job_id = str(uuid.uuid4())
        params = json.dumps({"fileId": "py-once", "from": "en", "to": "pt-BR"}).encode()
        headers = {"Nats-Msg-Id": job_id}
        first = await self.js.publish(WORK, params, headers=headers)
        again = await self.js.publish(WORK, params, headers=headers)
        self.assertFalse(first.duplicate)
        self.assertTrue(again.duplicate, "JetStream stores the job once")
        self.assertEqual(again.seq, first.seq)
        outcome = await self.outcome(job_id)
        self.assertEqual(outcome["ok"]["fileId"], "py-once")
        late = await self.js.publish(WORK, params, headers=headers)
        self.assertTrue(late.duplicate, "a repeat after the outcome is still the first job")
        self.assertEqual(translations_of("py-once"), 1, "ran once")

    async def test_a_job_past_its_deadline_is_not_run_and_says_timeout(self):
        job_id = str(uuid.uuid4())
        await self.js.publish(
            WORK,
            json.dumps({"fileId": "py-late", "from": "en", "to": "es"}).encode(),
            headers={
                "Nats-Msg-Id": job_id,
                "Koan-Service": SERVICE,
                "Koan-Action": "translate",
                "Koan-Deadline-Unix-Ms": str(int(time.time() * 1000) - 60_000),
            },
        )
        outcome = await self.outcome(job_id)
        self.assertEqual(outcome["error"], "timeout", outcome)
        self.assertEqual(translations_of("py-late"), 0)

    async def test_a_failing_job_records_its_error_and_is_dead_lettered(self):
        dead = await self.nc.subscribe(DEAD)
        job_id = str(uuid.uuid4())
        await self.js.publish(
            WORK,
            json.dumps({"fileId": "py-bad", "from": "en"}).encode(),
            headers={"Nats-Msg-Id": job_id},
        )
        outcome = await self.outcome(job_id)
        self.assertEqual(outcome["error"], "invalid_parameters")
        self.assertIn("to", outcome["message"])
        letter = await self.dead_letter_of(dead, job_id)
        self.assertEqual(letter.headers["Koan-Error"], "invalid_parameters")
        self.assertEqual(json.loads(letter.data), {"fileId": "py-bad", "from": "en"})

    async def test_a_job_in_another_wire_version_is_refused_not_run(self):
        dead = await self.nc.subscribe(DEAD)
        job_id = str(uuid.uuid4())
        await self.js.publish(
            WORK,
            json.dumps({"fileId": "py-v2-job", "from": "en", "to": "es"}).encode(),
            headers={"Nats-Msg-Id": job_id, "Koan-Wire": "2"},
        )
        outcome = await self.outcome(job_id)
        self.assertEqual(outcome["error"], "unsupported_wire_version")
        self.assertIn("Koan-Wire version 1", outcome["message"])
        letter = await self.dead_letter_of(dead, job_id)
        self.assertEqual(letter.headers["Koan-Error"], "unsupported_wire_version")
        self.assertEqual(letter.headers["Koan-Wire"], "2", "the job as it came")
        self.assertEqual(translations_of("py-v2-job"), 0)

    async def test_a_job_without_an_id_is_dead_lettered_with_the_reason(self):
        dead = await self.nc.subscribe(DEAD)
        await self.js.publish(
            WORK, json.dumps({"fileId": "py-no-id", "from": "en", "to": "es"}).encode()
        )
        while True:
            letter = await dead.next_msg(timeout=PATIENCE)
            if "py-no-id" in letter.data.decode():
                break
        self.assertEqual(letter.headers["Koan-Error"], "invalid_parameters")
        self.assertIn("Nats-Msg-Id", letter.headers["Koan-Error-Message"])
        self.assertNotIn("Koan-Action-Id", letter.headers)
        self.assertEqual(translations_of("py-no-id"), 0)

    async def dead_letter_of(self, sub, job_id):
        while True:
            letter = await sub.next_msg(timeout=PATIENCE)
            if (letter.headers or {}).get("Koan-Action-Id") == job_id:
                return letter

    # Events

    async def test_events_carry_the_envelope_and_the_callers_correlation_id(self):
        events = await self.nc.subscribe("koan.evt.translationservice.>")
        await self.nc.flush()
        await self.call(
            {"fileId": "py-evt", "from": "en", "to": "es"},
            headers={"Koan-Correlation-Id": "py-evt-1"},
        )
        seen = {}
        while set(seen) != {"TranslationStarted", "TranslationCompleted"}:
            msg = await events.next_msg(timeout=PATIENCE)
            event = conforms("event", json.loads(msg.data))
            if event["payload"].get("fileId") != "py-evt":
                continue
            self.assertEqual(msg.headers.get("Koan-Wire"), "1")
            self.assertTrue(msg.headers.get("Koan-Origin"))
            self.assertEqual(msg.subject, f"koan.evt.translationservice.{event['event'].lower()}")
            seen[event["event"]] = event
        done = seen["TranslationCompleted"]
        self.assertEqual(done["service"], SERVICE)
        self.assertEqual(done["correlation_id"], "py-evt-1")
        self.assertEqual(done["payload"], {"fileId": "py-evt", "from": "en", "to": "es"})
        self.assertGreater(done["seq"], seen["TranslationStarted"]["seq"])
        self.assertTrue(done["time"].endswith("Z"))

    async def test_a_body_that_breaks_the_schema_is_caught(self):
        """The schema check itself bites: a reply with neither field typed right fails."""
        with self.assertRaises(jsonschema.ValidationError):
            conforms("reply", {"error": 5})
        with self.assertRaises(jsonschema.ValidationError):
            conforms("outcome", {"id": "x", "attempts": 1})

    # Registry

    async def test_the_registry_lists_the_host_and_its_services(self):
        registry = await self.js.key_value("koan_registry")
        keys = await registry.keys()
        self.assertEqual(len(keys), 1, keys)
        instance = conforms("instance", json.loads((await registry.get(keys[0])).value))
        self.assertEqual(instance["host_id"], keys[0])
        self.assertIn("seen_at", instance)
        names = {s["name"] for s in instance["services"]}
        self.assertIn(SERVICE, names)


def main():
    global CLUSTER
    CLUSTER = Cluster()
    try:
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(Wire)
        result = unittest.TextTestRunner(verbosity=2).run(suite)
        failed = len(result.failures) + len(result.errors)
        if failed:
            print(f"--- log of koan-demo ---\n{CLUSTER.log('demo')}", file=sys.stderr)
        print(f"wire: {result.testsRun - failed} passed, {failed} failed")
        return 0 if result.wasSuccessful() and result.testsRun > 0 else 1
    finally:
        CLUSTER.close()


if __name__ == "__main__":
    sys.exit(main())
