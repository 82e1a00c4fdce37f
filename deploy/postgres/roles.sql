-- MyCert's PostgreSQL roles and grants (issue 20 §2: defence in depth).
--
-- Run as a superuser in MyCert's database, after `migrate` and again after every upgrade
-- (new tables get the same grants):
--     psql -v ON_ERROR_STOP=1 -d mycert -f deploy/postgres/roles.sql
-- then give each role a password (`\password mycert_web`) and put it in that host's
-- DATABASE_URL. Pure SQL (no psql variables): tests apply the same file.
--
--   mycert_owner   owns the tables; `migrate` runs as it, from an operator's shell.
--   mycert_web     the web hosts (DMZ): read and write what the pages need, never delete
--                  a certificate, an audit event, a CRL or an OCSP answer, never change
--                  an audit event, never write a CRL or an OCSP answer (workers sign).
--   mycert_worker  the workers and beat: the same, and they write CRLs and OCSP answers.
--
-- Neither can clear a revocation: migration 0009 adds a trigger that refuses it (and the
-- deletion of a revoked certificate) whoever asks. The workers do not rely on any of this:
-- they carry revocations forward from the CA-signed CRL (docs/deploy.md §16).

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mycert_owner') THEN
        CREATE ROLE mycert_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mycert_web') THEN
        CREATE ROLE mycert_web LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mycert_worker') THEN
        CREATE ROLE mycert_worker LOGIN;
    END IF;
    EXECUTE format(
        'GRANT CONNECT, TEMPORARY ON DATABASE %I TO mycert_web, mycert_worker',
        current_database()
    );
END
$$;

-- The application roles own nothing: no ALTER, DROP, TRUNCATE, trigger changes.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM mycert_web, mycert_worker;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO mycert_web, mycert_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO mycert_web, mycert_worker;

-- Everything else: read, add, change and delete (sessions, TOTP devices, admin log…).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO mycert_web, mycert_worker;

-- The record: never deleted by either role.
REVOKE DELETE ON mycert_certificate, mycert_auditevent, mycert_crl, mycert_ocspresponse
    FROM mycert_web, mycert_worker;
-- Audit events are appended, never changed (mycert.services.audit).
REVOKE UPDATE ON mycert_auditevent FROM mycert_web, mycert_worker;
-- CRLs and OCSP answers are the workers' signatures: web hosts only read them.
REVOKE INSERT, UPDATE ON mycert_crl, mycert_ocspresponse FROM mycert_web;
-- CRLs are never changed once stored, by anyone but the worker's own publication
-- (which writes the DER into the row it just inserted).
