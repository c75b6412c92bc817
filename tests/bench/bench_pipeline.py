#!/usr/bin/env python3
"""Benchmark: EHR Backup against the shell pipeline an administrator would write, on the same database.

Run on demand (pytest does not collect it):

    .venv/bin/python tests/bench/bench_pipeline.py [--size-mb 300] [--repeat 1]

It builds (or reuses) a database `ehr_bench` whose plain pg_dump is about --size-mb MB of EHR-like
data, then measures in one run, on that database:

  a. pg_dump | gzip -9 | openssl enc -aes-256-cbc -K .. -iv ..  > file     (the shell backup)
  b. pg_dump > /dev/null                                                     (reference)
  c. `ehr-backup create` in gzip mode (default level, and levels 4 and 9) and in zstd mode
  d. `ehr-backup restore` (into a fresh database, swapped in over an empty one, with its row-count check)
     against openssl enc -d | gunzip | psql --single-transaction, and against pg_restore -j N of a
     pg_dump -Fc of the same database (N = the CPUs; the custom-format dump is made untimed)

and prints absolute figures and ratios against the shell pipeline, plus a Markdown table. Outputs go
to a temporary directory under /var/tmp that is removed at the end; the restore target databases are
dropped at the end; `ehr_bench` is kept for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import sql

GENERATOR_VERSION = "4"  # bump when the generated data changes, so an old ehr_bench is rebuilt
BENCH_DB = "ehr_bench"
RESTORE_OURS = "ehr_bench_restore_ours"
RESTORE_SHELL = "ehr_bench_restore_shell"
RESTORE_PGR = "ehr_bench_restore_pg_restore"
MB = 1024 * 1024

# Targets the figures are judged against.
TARGET_GZIP_SPEEDUP = 4.0
TARGET_ZSTD_SPEEDUP = 6.0
TARGET_RESTORE_SPEEDUP = 1.25  # shell / ours: at least this much faster
TARGET_PG_RESTORE_RATIO = 1.0  # ours / pg_restore -j N: no slower
TARGET_RSS_MB = 150.0

# ---------------------------------------------------------------------------------------------------
# Synthetic EHR data
# ---------------------------------------------------------------------------------------------------

def _words(text: str) -> list[str]:
    return text.split()


FAMILY = _words("""Okafor Müller García Nguyen Smith Kowalski Haddad Tanaka O'Brien Silva Johnson Williams Brown
Jones Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez Wilson Anderson Thomas Taylor Moore Jackson
Martin Lee Perez Thompson White Harris Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright
Scott Torres Hill Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Schmidt
Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann Novák Dvořák Horvat Kovač Nowak Wiśniewski
Kim Park Choi Chen Wang Li Zhang Liu Yamamoto Suzuki Watanabe Sato Ito Singh Patel Kumar Shah Khan Ali
Hussain Ahmed Mensah Boateng Adeyemi Eze Mwangi Otieno Dubois Lefebvre Moreau Laurent Rossi Russo Ferrari
Esposito Bianchi Romano Jensen Nielsen Hansen Andersson Johansson Karlsson Virtanen Korhonen Murphy Kelly
Byrne Walsh O'Connor Papadopoulos Yilmaz Kaya Demir Cohen Levi Ivanov Petrov Smirnov Popescu Nagy""")
GIVEN = _words("""Ada Björn Chloé Dmitri Esi Farah Gus Hana Ivan Jun Olivia Liam Emma Noah Amelia Oliver Ava Elijah
Sophia Lucas Isabella Mason Mia Ethan Charlotte Logan Harper James Evelyn Aiden Abigail Jacob Emily Michael
Ella Daniel Elizabeth Henry Camila Jackson Luna Sebastian Sofia Mateo Avery Jack Mila Owen Aria Samuel
Scarlett Wei Mei Hiroshi Yuki Aarav Priya Arjun Ananya Kwame Amara Chidi Ngozi Fatima Omar Layla Yusuf
Zeynep Mehmet Elif Lukas Lena Jonas Anna Matteo Giulia Pierre Camille Lars Ingrid Sven Astrid Mateusz Zofia
Jakub Alžběta Tomás Lucía Diego Valentina Nikos Eleni Sean Siobhan Ciara Rhys Carys""")
STREETS = _words("""Main High Church Station Park Victoria Green Manor Mill School Kings Queens New Grange Chapel
Oak Elm Maple Cedar Pine Birch Willow Ash Lime Beech Meadow River Lake Hill Forest Valley Spring Bridge
Market Castle Abbey Priory Orchard Garden""")
STREET_KIND = _words("Street Road Avenue Lane Close Drive Way Court Place Crescent")
CITIES = _words("""Springfield Riverton Fairview Greenville Franklin Clinton Madison Georgetown Salem Arlington
Ashland Burlington Manchester Oxford Milton Newport Bristol Dover Kingston Lexington Auburn Dayton Hudson
Marion Oakland Jackson Chester Cleveland Winchester""")
CLINICIANS = [f"Dr. {g[0]}. {f}" for g, f in zip(GIVEN * 3, FAMILY * 2, strict=False)][:180]
DEPARTMENTS = _words("""Cardiology Oncology Pediatrics Orthopedics Neurology Dermatology Endocrinology Nephrology
Gastroenterology Pulmonology Rheumatology Urology Psychiatry Obstetrics Gynecology Ophthalmology ENT
Emergency Radiology Geriatrics Hematology Infectious-Diseases General-Surgery Family-Medicine""")
ICD10 = _words("""E11.9 E11.65 E78.5 I10 I25.10 I48.91 I50.9 J44.9 J45.909 J18.9 N18.3 N39.0 K21.9 K57.30 M54.5
M17.11 M81.0 F32.9 F41.1 G47.33 G43.909 E03.9 E66.9 D64.9 R07.9 R10.9 R51.9 R53.83 Z00.00 Z23 Z79.4
C50.911 C61 C34.90 L40.0 B20 A41.9 S72.001A O80 H25.9""")
# (LOINC code, display, unit, low, high, decimals)
OBS = [("8867-4", "Heart rate", "/min", 45, 130, 0), ("8480-6", "Systolic BP", "mm[Hg]", 90, 190, 0),
       ("8462-4", "Diastolic BP", "mm[Hg]", 50, 115, 0), ("29463-7", "Body weight", "kg", 3, 160, 1),
       ("8310-5", "Body temperature", "Cel", 35.2, 40.1, 1), ("9279-1", "Respiratory rate", "/min", 10, 32, 0),
       ("59408-5", "SpO2", "%", 84, 100, 0), ("2339-0", "Glucose", "mg/dL", 60, 320, 0),
       ("4548-4", "HbA1c", "%", 4.5, 12.5, 1), ("2160-0", "Creatinine", "mg/dL", 0.4, 4.8, 2),
       ("718-7", "Hemoglobin", "g/dL", 7.5, 18.2, 1), ("6690-2", "WBC", "10*3/uL", 2.1, 19.5, 1),
       ("777-3", "Platelets", "10*3/uL", 80, 520, 0), ("2951-2", "Sodium", "mmol/L", 126, 150, 0),
       ("2823-3", "Potassium", "mmol/L", 2.9, 6.1, 1), ("2093-3", "Cholesterol", "mg/dL", 110, 320, 0),
       ("2085-9", "HDL", "mg/dL", 22, 95, 0), ("13457-7", "LDL", "mg/dL", 40, 230, 0),
       ("1742-6", "ALT", "U/L", 7, 180, 0), ("33914-3", "eGFR", "mL/min/1.73m2", 12, 120, 0)]
DRUG_STEMS = _words("""amlo losar metfor atorva simva rosuva lisino enala ramipr carve meto biso furo spirono hydro
chlortha levo omepra panto esome sertra escita fluox bupro venla dulox gaba prega trama oxy morph parac
ibupro napro cele predni methylpre dexa insul glipi sita empa dapa cana warfa apixa rivaro clopi aspi
tamsu finas allopu febu colchi monte salbu tiotro budes flutica cetiri lorata amoxi azithro doxy cipro
nitrofu cepha vanco""")
DRUG_SUFFIX = _words("dipine sartan min statin pril lol semide lactone thiazide done xine prazole line pram tine " \
              "pion faxine xetine pentin balin dol done phine cetamol fen xen coxib sone lone sone lin zide " \
              "gliptin gliflozin farin xaban dogrel rin losin steride purinol xostat cine lukast tamol tropium " \
              "sonide sone rizine tadine cillin thromycin cycline floxacin rantoin lexin mycin")
ROUTES = _words("oral oral oral IV IM subcutaneous inhaled topical sublingual transdermal")
FREQ = _words("once-daily twice-daily three-times-daily every-8-hours every-12-hours at-night as-needed weekly")
NOTE_TYPES = _words("progress admission discharge consult procedure nursing telephone triage referral")
PHRASES = [
    "Patient seen and examined.", "History obtained from the patient and the chart.",
    "Chief complaint:", "History of present illness:", "Review of systems otherwise negative.",
    "Past medical history significant for", "No known drug allergies.", "Allergic to penicillin (rash).",
    "Medications reviewed and reconciled.", "Vital signs stable.", "On examination:",
    "Alert and oriented to person, place and time.", "Heart sounds normal, no murmurs.",
    "Chest clear to auscultation bilaterally.", "Abdomen soft, non-tender, non-distended.",
    "No peripheral oedema.", "Neurologically intact.", "Assessment and plan:", "Impression:",
    "Continue current management.", "Increase dose and review in two weeks.", "Labs ordered:",
    "Imaging reviewed:", "Discussed risks and benefits; patient agrees with the plan.",
    "Follow up in clinic in", "Return precautions given.", "Referred to", "Smoking cessation advised.",
    "Diet and exercise counselling provided.", "Wound clean and dry, healing well.",
    "Pain controlled on current regimen.", "Tolerating oral intake.", "Family updated at bedside.",
    "Plan discussed with attending physician.", "Will monitor renal function closely.",
    "Blood cultures pending.", "Fall risk assessment completed.", "Patient education provided.",
    "Denies chest pain, shortness of breath, fever or chills.", "Reports intermittent headaches.",
]
WORDS = _words("""the the the the the of of of and and and to to a a a in in in with with with for for on on
is is was was no no not patient patient patient reports reports denies denies noted noted history history
pain pain pain mild mild moderate moderate severe left left right right bilateral acute acute chronic
chronic stable stable improved improved worsening unchanged since days days weeks weeks months yesterday
today morning evening night after before during over at from by as per prn daily twice dose doses dosage
mg mg ml tablet tablets injection infusion started stopped continued increased decreased reduced titrated
blood pressure heart rate rhythm sinus tachycardia bradycardia palpitations chest abdomen abdominal back
lower upper extremity extremities head neck shoulder knee hip ankle wrist elbow spine lumbar cervical
thoracic skin rash lesion wound swelling oedema erythema tenderness cough sputum wheeze dyspnoea fever
chills nausea vomiting diarrhoea constipation fatigue weakness dizziness syncope headache vision hearing
appetite weight loss gain sleep mood anxiety depression memory confusion urine urinary frequency dysuria
haematuria glucose insulin diabetes hypertension hyperlipidaemia asthma copd pneumonia infection sepsis
antibiotics culture sensitivity renal hepatic cardiac pulmonary neurological gastrointestinal
musculoskeletal dermatological psychiatric endocrine haematology oncology metastatic tumour mass nodule
biopsy scan ct mri ultrasound x-ray ecg echo echocardiogram stress test result results normal abnormal
elevated low high within limits range follow-up review clinic referral consult physiotherapy occupational
therapy dietitian social work discharge admission ward icu emergency department outpatient surgery
postoperative preoperative procedure anaesthesia sutures dressing drain catheter cannula line oxygen
saturation nasal cannula mask ventilation physiotherapy mobilising independently assistance walker frame
family wife husband daughter son carer lives alone home nursing care plan goals comfort palliative
advance directive consent capacity discussed explained understands agrees declined refused requested
tolerating eating drinking fluids intake output bowel movement bowels opened passed flatus voiding
catheterised stool sample specimen sent pending awaiting reviewed checked repeated ordered arranged
scheduled booked cancelled postponed seen examined assessed reassessed observed monitored documented
informed notified escalated handed over overnight uneventful settled comfortable distressed agitated
drowsy alert oriented cooperative pleasant tearful withdrawn smoker ex-smoker alcohol units per week
occasional social nil illicit drugs allergy allergies penicillin sulfa latex codeine morphine
paracetamol ibuprofen aspirin clopidogrel warfarin apixaban heparin enoxaparin metformin gliclazide
amlodipine ramipril bisoprolol atorvastatin furosemide omeprazole salbutamol prednisolone amoxicillin
doxycycline ceftriaxone vancomycin levothyroxine sertraline mirtazapine quetiapine haloperidol
lorazepam zopiclone gabapentin tramadol oxycodone ondansetron metoclopramide lactulose senna
sodium potassium creatinine urea egfr haemoglobin platelets white cell count crp troponin bnp inr
hba1c cholesterol ldl hdl triglycerides tsh vitamin iron ferritin b12 folate albumin bilirubin alt ast
alp ggt lactate ph bicarbonate lipase amylase d-dimer procalcitonin magnesium calcium phosphate""")


def _vocab() -> list[str]:
    """About 1,400 tokens: clinical words (frequent ones repeated), drug-like names, some capitalised."""
    drugs = [a + b for a in DRUG_STEMS for b in DRUG_SUFFIX[::3]]
    extra = [w.capitalize() for w in WORDS[::7]] + [f"{c}{n}" for c in "TLCS" for n in range(1, 13)]
    return WORDS + drugs[::5][:150] + extra


SCHEMA = r"""
CREATE TABLE bench_meta (k text PRIMARY KEY, v text NOT NULL);
CREATE TABLE patients (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, mrn text NOT NULL, family_name text NOT NULL,
  given_name text NOT NULL, birth_date date NOT NULL, sex char(1) NOT NULL CHECK (sex IN ('F','M','X')),
  phone text, email text, address text, postcode text, insurance_id text, created_at timestamptz NOT NULL);
CREATE TABLE encounters (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, patient_id bigint NOT NULL, kind text NOT NULL,
  department text NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz, clinician text NOT NULL,
  reason_code text, status text NOT NULL);
CREATE TABLE observations (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, encounter_id bigint NOT NULL, code text NOT NULL,
  display text NOT NULL, value numeric(10,2), unit text, flag char(1), observed_at timestamptz NOT NULL);
CREATE TABLE medications (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, encounter_id bigint NOT NULL, drug text NOT NULL,
  dose_mg numeric(8,2) NOT NULL, route text NOT NULL, frequency text NOT NULL, start_date date NOT NULL,
  end_date date, prescriber text NOT NULL);
CREATE TABLE notes (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, encounter_id bigint NOT NULL, author text NOT NULL,
  note_type text NOT NULL, body text NOT NULL, written_at timestamptz NOT NULL);
CREATE TABLE documents (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, patient_id bigint NOT NULL, title text NOT NULL,
  mime_type text NOT NULL, content bytea NOT NULL, added_at timestamptz NOT NULL);
"""

CONSTRAINTS = r"""
ALTER TABLE patients ADD CONSTRAINT patients_mrn_key UNIQUE (mrn);
ALTER TABLE encounters ADD CONSTRAINT encounters_patient_fk FOREIGN KEY (patient_id) REFERENCES patients(id);
ALTER TABLE observations ADD CONSTRAINT observations_encounter_fk FOREIGN KEY (encounter_id) REFERENCES encounters(id);
ALTER TABLE medications ADD CONSTRAINT medications_encounter_fk FOREIGN KEY (encounter_id) REFERENCES encounters(id);
ALTER TABLE notes ADD CONSTRAINT notes_encounter_fk FOREIGN KEY (encounter_id) REFERENCES encounters(id);
ALTER TABLE documents ADD CONSTRAINT documents_patient_fk FOREIGN KEY (patient_id) REFERENCES patients(id);
CREATE INDEX ON patients (family_name, given_name);
CREATE INDEX ON encounters (patient_id, started_at);
CREATE INDEX ON observations (encounter_id);
CREATE INDEX ON observations (code, observed_at);
CREATE INDEX ON medications (encounter_id);
CREATE INDEX ON notes (encounter_id);
CREATE INDEX ON documents (patient_id);
"""

# Row counts per 300 MB of pg_dump output (calibrated: see --calibrate; shares are roughly notes 35%,
# observations 25%, encounters 12%, medications 8%, patients 7%, documents 13%).
ROWS_PER_300MB = {"patients": 106_000, "encounters": 318_000, "observations": 1_060_000,
                  "medications": 340_000, "notes": 122_000, "documents": 1_750}


def _insert_statements(n: dict[str, int]) -> list[tuple[str, str, dict[str, Any]]]:
    """(table, SQL, params) for each table; every value comes from generate_series and random()."""
    p = {"fam": FAMILY, "giv": GIVEN, "str": STREETS, "sk": STREET_KIND, "city": CITIES, "clin": CLINICIANS,
         "dept": DEPARTMENTS, "icd": ICD10, "np": n["patients"], "ne": n["encounters"]}
    stmts: list[tuple[str, str, dict[str, Any]]] = []
    stmts.append(("patients", """
INSERT INTO patients (id, mrn, family_name, given_name, birth_date, sex, phone, email, address, postcode,
                      insurance_id, created_at)
SELECT g, 'MRN' || lpad(g::text, 8, '0'), f, gv,
       date '1925-01-01' + floor(random() * 36000)::int, (ARRAY['F','M','X'])[1 + floor(random() * 2.02)::int],
       '+1-' || (200 + floor(random() * 800))::int || '-555-' || lpad(floor(random() * 10000)::int::text, 4, '0'),
       lower(replace(gv, ' ', '')) || '.' || lower(replace(replace(f, '''', ''), ' ', '')) || (g %% 97) ||
         (ARRAY['@example.org','@mail.example.com','@example.net'])[1 + g %% 3],
       (1 + floor(random() * 240))::int || ' ' || (%(str)s::text[])[1 + floor(random() * cardinality(%(str)s::text[]))::int] || ' ' ||
         (%(sk)s::text[])[1 + floor(random() * cardinality(%(sk)s::text[]))::int] || ', ' ||
         (%(city)s::text[])[1 + floor(random() * cardinality(%(city)s::text[]))::int],
       lpad(floor(random() * 99999)::int::text, 5, '0'),
       'INS-' || upper(substr(md5(g::text), 1, 10)),
       timestamptz '2012-01-01' + random() * interval '12 years'
FROM (SELECT g, (%(fam)s::text[])[1 + floor(random() * cardinality(%(fam)s::text[]))::int] AS f,
             (%(giv)s::text[])[1 + floor(random() * cardinality(%(giv)s::text[]))::int] AS gv
      FROM generate_series(1, %(np)s) g) s""", p))
    stmts.append(("encounters", """
INSERT INTO encounters (id, patient_id, kind, department, started_at, ended_at, clinician, reason_code, status)
SELECT g, 1 + floor(random() * %(np)s)::int,
       (ARRAY['outpatient','outpatient','outpatient','inpatient','emergency','telehealth','home-visit'])
         [1 + floor(random() * 7)::int],
       (%(dept)s::text[])[1 + floor(random() * cardinality(%(dept)s::text[]))::int], t,
       CASE WHEN random() < 0.97 THEN t + random() * interval '3 days' END,
       (%(clin)s::text[])[1 + floor(random() * cardinality(%(clin)s::text[]))::int],
       (%(icd)s::text[])[1 + floor(random() ^ 2 * cardinality(%(icd)s::text[]))::int],
       (ARRAY['finished','finished','finished','finished','cancelled','in-progress'])[1 + floor(random() * 6)::int]
FROM (SELECT g, timestamptz '2015-01-01' + random() * interval '10 years' AS t
      FROM generate_series(1, %(ne)s) g) s""", p))
    codes = [o[0] for o in OBS]
    stmts.append(("observations", """
INSERT INTO observations (id, encounter_id, code, display, value, unit, flag, observed_at)
SELECT g, 1 + floor(random() * %(ne)s)::int, (%(codes)s::text[])[k], (%(disp)s::text[])[k],
       round(((%(lo)s::float8[])[k] + random() * ((%(hi)s::float8[])[k] - (%(lo)s::float8[])[k]))::numeric,
             (%(dec)s::int[])[k]),
       (%(unit)s::text[])[k], (ARRAY['N','N','N','N','N','N','H','L'])[1 + floor(random() * 8)::int],
       timestamptz '2015-01-01' + random() * interval '10 years'
FROM (SELECT g, 1 + floor(random() * %(nobs)s)::int AS k FROM generate_series(1, %(n)s) g) s""",
                  {"ne": n["encounters"], "codes": codes, "disp": [o[1] for o in OBS], "lo": [float(o[3]) for o in OBS],
                   "hi": [float(o[4]) for o in OBS], "dec": [o[5] for o in OBS], "unit": [o[2] for o in OBS],
                   "nobs": len(OBS), "n": n["observations"]}))
    drugs = sorted({a + b for a in DRUG_STEMS for b in DRUG_SUFFIX[::4]})
    stmts.append(("medications", """
INSERT INTO medications (id, encounter_id, drug, dose_mg, route, frequency, start_date, end_date, prescriber)
SELECT g, 1 + floor(random() * %(ne)s)::int, (%(drugs)s::text[])[1 + floor(random() ^ 2 * cardinality(%(drugs)s::text[]))::int],
       (ARRAY[0.5, 1, 2.5, 5, 10, 12.5, 20, 25, 40, 50, 75, 100, 250, 500, 1000])[1 + floor(random() * 15)::int],
       (%(routes)s::text[])[1 + floor(random() * cardinality(%(routes)s::text[]))::int],
       (%(freq)s::text[])[1 + floor(random() * cardinality(%(freq)s::text[]))::int], d,
       CASE WHEN random() < 0.6 THEN d + floor(random() * 180)::int END,
       (%(clin)s::text[])[1 + floor(random() * cardinality(%(clin)s::text[]))::int]
FROM (SELECT g, date '2015-01-01' + floor(random() * 3650)::int AS d FROM generate_series(1, %(n)s) g) s""",
                  {"ne": n["encounters"], "drugs": drugs, "routes": ROUTES, "freq": FREQ, "clin": CLINICIANS,
                   "n": n["medications"]}))
    vocab = _vocab()
    # Free text: sentences of Zipf-like words (random()^2.5 favours the frequent ones) mixed with stock
    # phrases and measurements. The word list is correlated with g so it is drawn again for every row.
    stmts.append(("notes", """
INSERT INTO notes (id, encounter_id, author, note_type, body, written_at)
SELECT g, 1 + floor(random() * %(ne)s)::int, (%(clin)s::text[])[1 + floor(random() * cardinality(%(clin)s::text[]))::int],
       (%(types)s::text[])[1 + floor(random() * cardinality(%(types)s::text[]))::int],
       (SELECT string_agg(CASE
                 WHEN r < 0.05 THEN (%(phr)s::text[])[1 + floor(random() * cardinality(%(phr)s::text[]))::int]
                 WHEN r < 0.065 THEN 'BP ' || (95 + floor(random() * 80))::int || '/' ||
                                     (55 + floor(random() * 45))::int || ','
                 WHEN r < 0.08 THEN (ARRAY['HR','RR','SpO2','T','Wt','GCS','pain score'])[1 + floor(random() * 7)::int]
                                    || ' ' || round((random() * 100)::numeric, (g %% 2)) || ';'
                 WHEN r < 0.085 THEN to_char(timestamptz '2015-01-01' + random() * interval '10 years',
                                             'DD/MM/YYYY HH24:MI')
                 WHEN r < 0.15 THEN (%(voc)s::text[])[1 + floor(random() ^ 2.5 * cardinality(%(voc)s::text[]))::int] || '.'
                 ELSE (%(voc)s::text[])[1 + floor(random() ^ 2.5 * cardinality(%(voc)s::text[]))::int]
               END, ' ')
        FROM (SELECT random() AS r FROM generate_series(1, 20 + (g::bigint * 7919) %% 180)) w),
       timestamptz '2015-01-01' + random() * interval '10 years'
FROM generate_series(1, %(n)s) g""",
                  {"ne": n["encounters"], "clin": CLINICIANS, "types": NOTE_TYPES, "phr": PHRASES, "voc": vocab,
                   "n": n["notes"]}))
    # Scanned documents: mostly incompressible bytes (as in PDFs and JPEGs), 2-20 kB each.
    stmts.append(("documents", """
INSERT INTO documents (id, patient_id, title, mime_type, content, added_at)
SELECT g, 1 + floor(random() * %(np)s)::int,
       (ARRAY['Referral letter','Discharge summary','ECG trace','Consent form','Lab report','X-ray image',
              'Insurance card','Clinic letter'])[1 + g %% 8] || ' ' || g,
       (ARRAY['application/pdf','application/pdf','image/jpeg','image/png'])[1 + g %% 4],
       (CASE WHEN g %% 4 < 2 THEN '\\x255044462d312e340a'::bytea ELSE '\\xffd8ffe000104a464946'::bytea END) ||
       (SELECT decode(string_agg(md5(g::text || ':' || i::text || random()::text), ''), 'hex')
          FROM generate_series(1, 128 + (g::bigint * 104729) %% 1200) i),
       timestamptz '2015-01-01' + random() * interval '10 years'
FROM generate_series(1, %(n)s) g""", {"np": n["patients"], "n": n["documents"]}))
    return stmts


def _rows_for(size_mb: float) -> dict[str, int]:
    scale = size_mb / 300.0
    return {t: max(10, round(v * scale)) for t, v in ROWS_PER_300MB.items()}


def ensure_database(admin_url: str, size_mb: float, rebuild: bool, name: str = BENCH_DB) -> tuple[bool, float]:
    """Build ehr_bench (or `name`) unless it exists, is complete and was built for this size; return (built,
    seconds)."""
    want = {"size_mb": f"{size_mb:g}", "generator": GENERATOR_VERSION}
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists and not rebuild:
        try:
            with psycopg.connect(db_url(admin_url, name), autocommit=True) as conn:
                have: dict[str, str] = dict(conn.execute("SELECT k, v FROM bench_meta").fetchall())
            if all(have.get(k) == v for k, v in want.items()) and have.get("complete") == "1":
                return False, 0.0
            print(f"{name} was built for {have.get('size_mb')} MB (generator {have.get('generator')}); "
                  "rebuilding", file=sys.stderr)
        except psycopg.Error:
            print(f"{name} exists but is not a complete benchmark database; rebuilding", file=sys.stderr)
    t0 = time.perf_counter()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    rows = _rows_for(size_mb)
    print(f"building {name} for about {size_mb:g} MB of pg_dump output: "
          + ", ".join(f"{t} {v:,}" for t, v in rows.items()), file=sys.stderr)
    with psycopg.connect(db_url(admin_url, name), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SELECT setseed(0.4242)")
        conn.execute(SCHEMA)
        for table, stmt, params in _insert_statements(rows):
            t = time.perf_counter()
            conn.execute(stmt, params)
            print(f"  {table:<13} {time.perf_counter() - t:6.1f} s", file=sys.stderr)
        t = time.perf_counter()
        conn.execute(CONSTRAINTS)
        for table in ROWS_PER_300MB:
            conn.execute(sql.SQL("SELECT setval(pg_get_serial_sequence({}, 'id'), (SELECT max(id) FROM {}))")
                         .format(sql.Literal(table), sql.Identifier(table)))
        print(f"  {'constraints':<13} {time.perf_counter() - t:6.1f} s", file=sys.stderr)
        t = time.perf_counter()
        conn.execute("VACUUM (ANALYZE, FREEZE)")  # hint bits set now, not during the first timed dump
        conn.execute("CHECKPOINT")
        print(f"  {'vacuum':<13} {time.perf_counter() - t:6.1f} s", file=sys.stderr)
        with conn.transaction():
            conn.execute("DELETE FROM bench_meta")
            for k, v in {**want, "complete": "1"}.items():
                conn.execute("INSERT INTO bench_meta VALUES (%s, %s)", (k, v))
    return True, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------------------
# Running and measuring a child process
# ---------------------------------------------------------------------------------------------------


def db_url(admin_url: str, dbname: str) -> str:
    """The admin connection string with another database name (URL or key=value form)."""
    params = pg_conninfo.conninfo_to_dict(admin_url)
    params["dbname"] = dbname
    if admin_url.startswith(("postgresql://", "postgres://")) and not params.get("password"):
        host = str(params.get("host", "127.0.0.1"))
        user = str(params.get("user", ""))
        return f"postgresql://{user + '@' if user else ''}{host}:{params.get('port', '5432')}/{dbname}"
    return pg_conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def _status(pid: int) -> tuple[str, int]:
    """(Name, VmHWM in kB) of one process: its name and peak resident set size; 0 when gone or a zombie."""
    name, hwm = "", 0
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Name:"):
                    name = line.split(None, 1)[1].strip().decode("utf-8", "replace")
                elif line.startswith(b"VmHWM:"):
                    hwm = int(line.split()[1])
                    break
    except (OSError, ValueError, IndexError):
        pass
    return name, hwm


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    kids = [int(x) for x in fh.read().split()]
            except (OSError, ValueError):
                continue
            out.extend(kids)
            todo.extend(kids)
    return out


@dataclass
class Measured:
    """What one timed child process did."""

    argv: list[str]
    rc: int
    wall: float
    cpu: float  # user + system of the child and every descendant it waited for
    rss_self_mb: float  # peak RSS of the child process itself (VmHWM, polled)
    rss_desc_mb: float  # largest peak RSS among its descendants (pg_dump, psql, gzip, ...)
    stdout: str = ""
    stderr: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def run_measured(argv: list[str], *, env: dict[str, str] | None = None, stdout_path: str | None = None,
                 poll: float = 0.02, timeout: float = 3600) -> Measured:
    """Run argv, timing it (wall), and polling its own and its descendants' peak RSS; reap with wait4."""
    out_fh = open(stdout_path, "wb") if stdout_path else None  # noqa: SIM115 - closed below
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                            stdout=out_fh if out_fh else subprocess.PIPE, stderr=subprocess.PIPE)
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}

    def drain(stream: Any, key: str) -> None:
        for block in iter(lambda: stream.read(65536), b""):
            chunks[key].append(block)

    readers = [threading.Thread(target=drain, args=(proc.stderr, "err"), daemon=True)]
    if not out_fh:
        readers.append(threading.Thread(target=drain, args=(proc.stdout, "out"), daemon=True))
    for r in readers:
        r.start()
    peak = {"self": 0, "desc": 0}
    done = threading.Event()

    def sample() -> None:
        # A child seen between fork and exec still carries the parent's name (and, with vfork, its
        # memory): it is skipped until it has become pg_dump, psql, gzip, ...
        while not done.is_set():
            own_name, hwm = _status(proc.pid)
            peak["self"] = max(peak["self"], hwm)
            for child in _descendants(proc.pid):
                name, hwm = _status(child)
                if name and name != own_name:
                    peak["desc"] = max(peak["desc"], hwm)
            done.wait(poll)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
    wall = time.perf_counter() - t0
    done.set()
    proc.returncode = os.waitstatus_to_exitcode(status)
    sampler.join()
    for r in readers:
        r.join()
    if out_fh:
        out_fh.close()
    return Measured(argv=argv, rc=proc.returncode, wall=wall, cpu=usage.ru_utime + usage.ru_stime,
                    rss_self_mb=peak["self"] / 1024, rss_desc_mb=peak["desc"] / 1024,
                    stdout=b"".join(chunks["out"]).decode("utf-8", "replace"),
                    stderr=b"".join(chunks["err"]).decode("utf-8", "replace"))


def checked(m: Measured, what: str) -> Measured:
    if m.rc != 0:
        raise SystemExit(f"{what} failed (exit {m.rc}):\n{m.stderr[-3000:]}")
    return m


# ---------------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the results table."""

    name: str
    kind: str  # "backup", "reference", "restore"
    wall: float
    size: int | None = None
    cpu: float | None = None
    rss_mb: float | None = None  # our Python process only
    tools_rss_mb: float | None = None  # pg_dump / psql / gzip / openssl
    extra: dict[str, Any] = field(default_factory=dict)


class Bench:
    """Holds the environment of one run and the measurements made."""

    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.work = workdir
        self.admin = args.pg_url
        self.src = db_url(self.admin, BENCH_DB)
        self.cli = str(Path(sys.executable).with_name("ehr-backup"))
        if not Path(self.cli).exists():
            self.cli = shutil.which("ehr-backup") or "ehr-backup"
        self.pg_bin = self._pg_bin()
        self.shell_key = secrets.token_hex(32)
        self.shell_iv = secrets.token_hex(16)
        self.our_key = subprocess.run([self.cli, "keygen"], capture_output=True, text=True,
                                      check=True).stdout.strip()
        self.rows: list[Row] = []
        self.dump_bytes: int | None = None

    def _pg_bin(self) -> Path:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
        assert row is not None
        d = Path(f"/usr/lib/postgresql/{row[0]}/bin")
        if (d / "pg_dump").exists():
            return d
        return Path(shutil.which("pg_dump") or "pg_dump").parent

    def tool(self, name: str) -> str:
        return str(self.pg_bin / name)

    def env(self, **extra: str) -> dict[str, str]:
        """Our CLI's environment: nothing inherited that configures it, everything in the work dir."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PG", "EHR_BACKUP_", "BACKUP_ENCRYPTION_")) and k != "DATABASE_URL"}
        env.update(DATABASE_URL=self.src, BACKUP_ENCRYPTION_KEY=self.our_key,
                   EHR_BACKUP_DATA_DIR=str(self.work / "data"), EHR_BACKUP_DEFAULT_DIR=str(self.work / "out"),
                   EHR_BACKUP_SAFETY_BACKUP="0")
        env.update(extra)
        return env

    def checkpoint(self) -> None:
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute("CHECKPOINT")

    def fresh_db(self, name: str) -> str:
        self.drop_db(name)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return db_url(self.admin, name)

    def drop_db(self, name: str) -> None:
        """Drop a restore target, and the copies our restore kept beside it (`<name>__before_…`)."""
        assert name in (RESTORE_OURS, RESTORE_SHELL, RESTORE_PGR)  # never anything else
        with psycopg.connect(self.admin, autocommit=True) as conn:
            kept = [r[0] for r in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                               (name + "__",)).fetchall()]
            for db in [name, *kept]:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db)))

    def best(self, runs: list[Measured]) -> Measured:
        """The fastest run (the least disturbed by anything else on the machine), with every run's time."""
        m = min(runs, key=lambda r: r.wall)
        m.data["walls"] = [r.wall for r in runs]
        return m

    # ----- measurements ------------------------------------------------------------------------------
    def reference(self) -> Row:
        cmd = f"{shlex.quote(self.tool('pg_dump'))} --format=plain -d {shlex.quote(self.src)} > /dev/null"
        runs = [checked(run_measured(["bash", "-o", "pipefail", "-c", cmd]), "pg_dump")
                for _ in range(self.args.repeat)]
        m = self.best(runs)
        return Row("pg_dump > /dev/null (reference)", "reference", m.wall, cpu=m.cpu, tools_rss_mb=m.rss_desc_mb,
                   extra={"walls": m.data["walls"]})

    def shell_backup(self) -> tuple[Row, Path]:
        path = self.work / "shell.sql.gz.enc"
        cmd = (f"{shlex.quote(self.tool('pg_dump'))} --format=plain -d {shlex.quote(self.src)} | gzip -9 | "
               f"openssl enc -aes-256-cbc -K {self.shell_key} -iv {self.shell_iv} > {shlex.quote(str(path))}")
        runs = []
        for _ in range(self.args.repeat):
            self.checkpoint()
            runs.append(checked(run_measured(["bash", "-o", "pipefail", "-c", cmd]), "shell backup"))
        m = self.best(runs)
        return Row("shell: pg_dump | gzip -9 | openssl", "backup", m.wall, size=path.stat().st_size, cpu=m.cpu,
                   tools_rss_mb=m.rss_desc_mb, extra={"walls": m.data["walls"]}), path

    def our_backup(self, name: str, compression: str, keep: bool, **env: str) -> tuple[Row, dict[str, Any]]:
        runs: list[tuple[Measured, dict[str, Any]]] = []
        for _ in range(self.args.repeat):
            self.checkpoint()
            m = checked(run_measured([self.cli, "create", "--description", "bench", "--compression", compression,
                                      "--json"], env=self.env(**env)), f"ehr-backup create ({name})")
            info = json.loads(m.stdout)
            runs.append((m, info))
        peak_rss = max(r[0].rss_self_mb for r in runs)
        m, info = min(runs, key=lambda r: r[0].wall)
        walls = [r[0].wall for r in runs]
        for other_m, other in runs:  # keep only the file of the best run, and only when needed
            if other is not info or not keep:
                Path(other["path"]).unlink(missing_ok=True)
        self.dump_bytes = int(info["dumpBytes"])
        return Row(name, "backup", m.wall, size=int(info["size"]), cpu=m.cpu, rss_mb=peak_rss,
                   tools_rss_mb=m.rss_desc_mb, extra={"env": env, "walls": walls}), info

    def shell_restore(self, path: Path) -> Row:
        runs = []
        for _ in range(self.args.repeat):
            target = self.fresh_db(RESTORE_SHELL)
            self.checkpoint()
            cmd = (f"openssl enc -d -aes-256-cbc -K {self.shell_key} -iv {self.shell_iv} -in "
                   f"{shlex.quote(str(path))} | gunzip | {shlex.quote(self.tool('psql'))} -X -q -v ON_ERROR_STOP=1 "
                   f"--single-transaction -d {shlex.quote(target)} > /dev/null")
            runs.append(checked(run_measured(["bash", "-o", "pipefail", "-c", cmd]), "shell restore"))
        m = self.best(runs)
        return Row("shell: openssl -d | gunzip | psql", "restore", m.wall, cpu=m.cpu, tools_rss_mb=m.rss_desc_mb,
                   extra={"walls": m.data["walls"]})

    def our_restore(self, name: str, backup_id: str) -> Row:
        runs = []
        phases: dict[str, float] = {}
        for _ in range(self.args.repeat):
            target = self.fresh_db(RESTORE_OURS)  # an existing database: the restore swaps in over it
            self.checkpoint()
            m = checked(run_measured([self.cli, "restore", backup_id, "--target-url", target, "--yes", "--json"],
                                     env=self.env()), f"ehr-backup restore ({name})")
            report = json.loads(m.stdout)
            if not report.get("rowCountsMatch") or not report.get("previousDatabase"):
                raise SystemExit(f"restore {name}: row counts differ: {report.get('mismatchedTables')}")
            if not runs or m.wall < min(r.wall for r in runs):
                phases = report.get("phases") or {}
            runs.append(m)
        m = self.best(runs)
        return Row(name, "restore", m.wall, cpu=m.cpu, rss_mb=max(r.rss_self_mb for r in runs), tools_rss_mb=m.rss_desc_mb,
                   extra={"walls": m.data["walls"], "phases": phases})

    def pg_restore(self) -> Row:
        """pg_restore -j N of a custom-format dump of the same database (the dump is made untimed)."""
        dump = self.work / "bench.dump"
        if not dump.exists():
            subprocess.run([self.tool("pg_dump"), "-Fc", "-d", self.src, "-f", str(dump)], check=True)
        jobs = str(os.cpu_count() or 1)
        runs = []
        for _ in range(self.args.repeat):
            target = self.fresh_db(RESTORE_PGR)
            self.checkpoint()
            runs.append(checked(run_measured([self.tool("pg_restore"), "-j", jobs, "-d", target, str(dump)]),
                                "pg_restore"))
        m = self.best(runs)
        return Row(f"pg_restore -j {jobs} (custom format)", "restore", m.wall, cpu=m.cpu,
                   tools_rss_mb=m.rss_desc_mb, extra={"walls": m.data["walls"]})


def _parse_extra(spec: str) -> tuple[str, str, dict[str, str]]:
    """'NAME:gzip:VAR=VAL,VAR=VAL' -> (name, compression, env)."""
    try:
        name, compression, assignments = spec.split(":", 2)
        env = dict(a.split("=", 1) for a in assignments.split(",") if a)
    except ValueError:
        raise argparse.ArgumentTypeError("--extra takes NAME:gzip|zstd:VAR=VALUE[,VAR=VALUE...]") from None
    if compression not in ("gzip", "zstd"):
        raise argparse.ArgumentTypeError("--extra: compression must be gzip or zstd")
    return name, compression, env


def machine_facts() -> dict[str, str]:
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as fh:
            mem = f"{int(fh.readline().split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass

    def version(argv: list[str]) -> str:
        try:
            r = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    try:
        from importlib.metadata import version as pkg_version
        libs = f"deflate {pkg_version('deflate')}, zlib-ng {pkg_version('zlib-ng')}, zstandard {pkg_version('zstandard')}, " \
               f"cryptography {pkg_version('cryptography')}"
    except Exception:  # noqa: BLE001 - informational only
        libs = "?"
    root = Path(__file__).resolve().parents[2]
    code = version(["git", "-C", str(root), "rev-parse", "--short", "HEAD"])
    try:
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--",
                                "ehr_backup"], capture_output=True, text=True, timeout=10, check=False).stdout
        code += " (with uncommitted changes in ehr_backup/)" if dirty.strip() else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"code": code, "nproc": str(os.cpu_count()), "cpu": model or platform.processor(), "memory": mem,
            "kernel": platform.release(), "python": platform.python_version(), "libraries": libs,
            "gzip": version(["gzip", "--version"]), "openssl": version(["openssl", "version"]),
            "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def _mb(n: float | None, digits: int = 1) -> str:
    return "-" if n is None else f"{n / MB:.{digits}f}"


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def report(b: Bench, facts: dict[str, str], shell: Row, shell_restore: Row, dump_bytes: int) -> int:
    """Print the tables; return the number of targets missed."""
    header = ["run", "wall s", "runs s", "MB/s", "file MB", "CPU s", "our RSS MB", "tools RSS MB",
              "speed vs shell", "size vs gzip -9"]
    table: list[list[str]] = []
    for r in b.rows:
        base = shell_restore if r.kind == "restore" else shell
        speed = base.wall / r.wall
        size_ratio = (r.size / shell.size) if (r.size and shell.size and r.kind == "backup") else None
        walls = r.extra.get("walls") or [r.wall]
        spread = f"{min(walls):.1f}-{max(walls):.1f}" if len(walls) > 1 else "-"
        table.append([r.name, f"{r.wall:.2f}", spread, f"{dump_bytes / MB / r.wall:.0f}", _mb(r.size), _f(r.cpu, ".1f"),
                      _f(r.rss_mb, ".0f"), _f(r.tools_rss_mb, ".0f"),
                      f"{speed:.2f}x" if r is not base else "1.00x (base)",
                      f"{size_ratio:.3f}" if size_ratio is not None else "-"])

    # Targets
    def row(name: str) -> Row | None:
        return next((r for r in b.rows if r.name == name), None)

    checks: list[tuple[str, bool, str]] = []
    g = row(NAME_GZIP)
    z = row(NAME_ZSTD)
    rg = row(NAME_RESTORE_GZIP)
    rz = row(NAME_RESTORE_ZSTD)
    if g and shell.size and g.size:
        sp = shell.wall / g.wall
        checks.append((f"gzip mode >= {TARGET_GZIP_SPEEDUP:g}x faster than the shell pipeline", sp >= TARGET_GZIP_SPEEDUP,
                       f"{sp:.2f}x"))
        checks.append(("gzip mode file no larger than gzip -9's", g.size <= shell.size,
                       f"{g.size:,} vs {shell.size:,} bytes ({(g.size / shell.size - 1) * 100:+.2f}%)"))
    if z:
        sp = shell.wall / z.wall
        checks.append((f"zstd mode >= {TARGET_ZSTD_SPEEDUP:g}x faster than the shell pipeline", sp >= TARGET_ZSTD_SPEEDUP,
                       f"{sp:.2f}x"))
    pgr = next((r for r in b.rows if r.name.startswith("pg_restore")), None)
    for rr in (rg, rz):
        if rr:
            speed = shell_restore.wall / rr.wall
            checks.append((f"{rr.name}: >= {TARGET_RESTORE_SPEEDUP:g}x faster than the shell restore",
                           speed >= TARGET_RESTORE_SPEEDUP,
                           f"{speed:.2f}x ({rr.wall:.1f} s vs {shell_restore.wall:.1f} s; phases "
                           + ", ".join(f"{k} {v:.1f} s" for k, v in (rr.extra.get("phases") or {}).items()) + ")"))
            if pgr:
                ratio = rr.wall / pgr.wall
                checks.append((f"{rr.name}: no slower than {pgr.name}", ratio <= TARGET_PG_RESTORE_RATIO,
                               f"{ratio:.2f}x its time ({rr.wall:.1f} s vs {pgr.wall:.1f} s)"))
    ours = [r for r in b.rows if r.rss_mb is not None]
    if ours:
        worst = max(ours, key=lambda r: r.rss_mb or 0)
        checks.append((f"peak RSS of our process < {TARGET_RSS_MB:g} MB", (worst.rss_mb or 0) < TARGET_RSS_MB,
                       f"max {worst.rss_mb:.0f} MB ({worst.name})"))
    levels = [r for r in b.rows if r.kind == "backup" and r.name.startswith("ours: gzip") and r.size]
    fitting = [r for r in levels if shell.size and r.size is not None and r.size <= shell.size]

    print()
    print(f"EHR Backup benchmark -- database {BENCH_DB}: {dump_bytes / MB:.0f} MB of pg_dump output "
          f"({dump_bytes:,} bytes); best of {b.args.repeat} run(s) each")
    for k, v in facts.items():
        print(f"  {k}: {v}")
    print(f"  load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    widths = [max(len(header[i]), *(len(t[i]) for t in table)) for i in range(len(header))]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))
    print(line)
    print("-" * len(line))
    for t in table:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths))))
    print()
    print("wall s = the fastest of the runs; runs s = fastest-slowest; MB = 2^20 bytes; "
          "MB/s = MB of pg_dump output per wall-clock second; speed vs shell = shell time / this time (backups "
          "against the shell backup, restores against the shell restore); size vs gzip -9 = this file / the "
          "shell file; our RSS = peak RSS (VmHWM) of the ehr-backup Python process alone; tools RSS = the "
          "largest peak among its children (pg_dump, psql) or the shell pipeline's processes.")
    print()
    missed = 0
    print("Targets:")
    for text, ok, evidence in checks:
        missed += 0 if ok else 1
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}: {evidence}")
    if levels:
        if fitting:
            best_fit = min(fitting, key=lambda r: r.wall)
            assert best_fit.size is not None and shell.size is not None
            print(f"  gzip level giving files no larger than gzip -9's in the least time: {best_fit.name} "
                  f"({best_fit.wall:.2f} s, {best_fit.size / shell.size:.3f} of gzip -9's size)")
        else:
            print("  no measured gzip level gives files no larger than gzip -9's")
    print()
    print("Markdown:")
    print()
    print(f"Database: {dump_bytes / MB:.0f} MB of pg_dump output; {facts['nproc']} CPUs ({facts['cpu']}); "
          f"best of {b.args.repeat} run(s).")
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
    for t in table:
        print("| " + " | ".join(c.replace("|", "\\|") for c in t) + " |")
    print()
    print("| target | result | measured |")
    print("|---|---|---|")
    for text, ok, evidence in checks:
        print(f"| {text} | {'pass' if ok else '**FAIL**'} | {evidence} |")
    print()
    return missed


NAME_GZIP = "ours: gzip (default level)"
NAME_ZSTD = "ours: zstd (default level)"
NAME_RESTORE_GZIP = "ours: restore gzip"
NAME_RESTORE_ZSTD = "ours: restore zstd"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mb", type=float, default=300, help="approximate pg_dump output of ehr_bench (default 300)")
    p.add_argument("--repeat", type=int, default=3,
                   help="runs per measurement; the fastest is reported, with the spread (default 3)")
    p.add_argument("--gzip-levels", default="4,9",
                   help="extra EHR_BACKUP_GZIP_LEVEL values to measure besides the default (default 4,9)")
    p.add_argument("--extra", action="append", type=_parse_extra, default=[], metavar="NAME:ALG:VAR=VAL,...",
                   help="an extra backup variant, e.g. 'gzip t=1:gzip:EHR_BACKUP_THREADS=1' (repeatable)")
    p.add_argument("--no-restore", action="store_true", help="skip the restore measurements")
    p.add_argument("--rebuild", action="store_true", help=f"rebuild {BENCH_DB} even if it looks current")
    p.add_argument("--build-only", action="store_true", help=f"only build (or check) {BENCH_DB}")
    p.add_argument("--pg-url", default=os.environ.get("EHR_BENCH_PG_URL",
                                                      "postgresql://postgres@127.0.0.1:5432/postgres"),
                   help="an administrative connection (default: EHR_BENCH_PG_URL or postgres@127.0.0.1:5432)")
    p.add_argument("--tmp", default="/var/tmp", help="where the temporary work directory goes (default /var/tmp)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error("--repeat must be at least 1")

    built, secs = ensure_database(args.pg_url, args.size_mb, args.rebuild)
    print(f"{BENCH_DB}: " + (f"built in {secs:.0f} s" if built else "reused"), file=sys.stderr)
    if args.build_only:
        return 0
    facts = machine_facts()
    load1 = os.getloadavg()[0]
    if load1 > 0.5:
        print(f"warning: load average {load1:.2f} before starting: something else is using the CPU, and the "
              "figures will be noisy", file=sys.stderr)
    work = Path(tempfile.mkdtemp(prefix="ehr-bench-", dir=args.tmp))
    os.chmod(work, 0o700)
    bench: Bench | None = None
    missed = 0
    try:
        bench = Bench(args, work)

        def step(text: str) -> None:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

        step("warm-up: pg_dump > /dev/null")
        bench.reference()  # brings the database into the page cache; not reported
        step("shell backup")
        shell, shell_file = bench.shell_backup()
        step("pg_dump reference")
        ref = bench.reference()
        step("ours: gzip, default level")
        g, g_info = bench.our_backup(NAME_GZIP, "gzip", keep=True)
        step("ours: zstd, default level")
        z, z_info = bench.our_backup(NAME_ZSTD, "zstd", keep=True)
        bench.rows += [shell, ref, g, z]
        for lv in [x.strip() for x in args.gzip_levels.split(",") if x.strip()]:
            step(f"ours: gzip level {lv}")
            bench.rows.append(bench.our_backup(f"ours: gzip level {lv}", "gzip", keep=False,
                                               EHR_BACKUP_GZIP_LEVEL=lv)[0])
        for name, compression, env in args.extra:
            step(f"extra: {name}")
            bench.rows.append(bench.our_backup(f"extra: {name}", compression, keep=False, **env)[0])
        dump_bytes = bench.dump_bytes or 0
        shell_restore = Row("shell restore (not measured)", "restore", float("nan"))
        if not args.no_restore:
            step("shell restore")
            shell_restore = bench.shell_restore(shell_file)
            step("ours: restore gzip")
            rg = bench.our_restore(NAME_RESTORE_GZIP, g_info["id"])
            step("ours: restore zstd")
            rz = bench.our_restore(NAME_RESTORE_ZSTD, z_info["id"])
            step("pg_restore of a custom-format dump")
            pgr = bench.pg_restore()
            bench.rows += [shell_restore, rg, rz, pgr]
        missed = report(bench, facts, shell, shell_restore, dump_bytes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if bench is not None and not args.no_restore:
            for name in (RESTORE_OURS, RESTORE_SHELL, RESTORE_PGR):
                try:
                    bench.drop_db(name)
                except psycopg.Error as exc:
                    print(f"could not drop {name}: {exc}", file=sys.stderr)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
