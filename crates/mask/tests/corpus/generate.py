#!/usr/bin/env python3
"""Generates the labelled accuracy corpus for portcullis-mask (see README.md here).

Run from anywhere: `python3 crates/mask/tests/corpus/generate.py`. The output (*.txt next to
this script) is committed so the corpus can be reviewed as data; re-running the script must
reproduce it byte for byte (the random generator is seeded and nothing else is read).

Every value is invented here. Card numbers are either issuers' documented test numbers or
random digits behind a known issuer prefix with a computed Luhn digit; IBANs get computed
ISO 7064 mod-97 check digits over random account numbers; SSNs are random within the valid
ranges; phone numbers use ranges reserved for fiction where a country has one (US 555-01xx,
UK 020 7946 0xxx and 07700 900xxx, AU 0491 570 xxx) and random digits elsewhere; IP
addresses use private and documentation ranges; tokens and keys are random characters
behind the vendors' published prefixes and are not live credentials.
"""

import base64
import ipaddress
import json
import os
import random
import string

HERE = os.path.dirname(os.path.abspath(__file__))
RNG = random.Random(0x5EED_2024_0506)

DETECTORS = [
    "email", "phone", "ssn", "credit_card", "iban", "ipv4", "ipv6", "aws_access_key",
    "aws_secret_key", "github_token", "gitlab_token", "slack_token", "stripe_key",
    "private_key", "jwt", "password",
]
PLACEHOLDERS = ["[" + d.upper() + "]" for d in DETECTORS]

ALNUM = string.ascii_letters + string.digits
UPPER_ALNUM = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"
B32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
B64 = string.ascii_letters + string.digits + "+/"


def rand(alphabet, n):
    return "".join(RNG.choice(alphabet) for _ in range(n))


def digits(n):
    return rand(string.digits, n)


# ---------------------------------------------------------------------------------------
# Reference checks (the definitions in the brief), used to assert that every positive is
# valid and every near miss that claims to be invalid really is.

def luhn_check_digit(body):
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(number):
    return len(number) > 1 and luhn_check_digit(number[:-1]) == number[-1]


def card_issuer(number):
    """The issuer for a known prefix and length, else None."""
    n = len(number)
    p2, p3, p4 = int(number[:2]), int(number[:3]), int(number[:4])
    if number[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (number.startswith("6011") or p2 == 65 or 644 <= p3 <= 649) and n in (16, 19):
        return "discover"
    if (p2 in (36, 38, 39) or 300 <= p3 <= 305) and n == 14:
        return "diners"
    if 3528 <= p4 <= 3589 and n in (16, 19):
        return "jcb"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    return None


def card_ok(number):
    return number.isdigit() and luhn_ok(number) and card_issuer(number) is not None


def iban_check_digits(country, bban):
    s = bban + country + "00"
    n = int("".join(str(int(ch, 36)) for ch in s))
    return f"{98 - n % 97:02d}"


def iban_ok(iban):
    s = iban.replace(" ", "")
    if len(s) < 15 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    r = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in r)) % 97 == 1


def ssn_ok(ssn):
    a, g, s = ssn.split("-")
    a, g, s = int(a), int(g), int(s)
    return a != 0 and a != 666 and a < 900 and g != 0 and s != 0


# ---------------------------------------------------------------------------------------
# Noise: realistic values that are never sensitive and appear around the positives.

def uuid4():
    h = rand(HEX, 32)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{RNG.choice('89ab')}{h[17:20]}-{h[20:]}"


def iso_ts():
    return (f"2024-{RNG.randint(1, 12):02d}-{RNG.randint(1, 28):02d}T{RNG.randint(0, 23):02d}:"
            f"{RNG.randint(0, 59):02d}:{RNG.randint(0, 59):02d}.{RNG.randint(0, 999):03d}Z")


def epoch_ms():
    return str(RNG.randint(1_704_067_200_000, 1_735_603_200_000))


def git_sha():
    return rand(HEX, 40)


def order_id():
    return f"ORD-2024-{digits(6)}"


def invoice_id():
    return f"INV-{RNG.randint(2019, 2025)}-{digits(5)}"


def req_id():
    return "req_" + rand(HEX, 16)


FIRST = ["alice", "bruno", "chen", "dmitri", "elena", "farah", "gustavo", "hana", "ines",
         "jonas", "kwame", "lea", "mateo", "noor", "oskar", "priya", "quentin", "rosa",
         "sven", "tamar", "umar", "vera", "wei", "ximena", "yusuf", "zoe"]
LAST = ["moreau", "okafor", "lindqvist", "tanaka", "novak", "haddad", "ferreira",
        "kowalski", "nguyen", "schmidt", "rossi", "dubois", "ivanova", "mendes", "osei",
        "park", "quispe", "varga"]
DISPLAY = ["Zoë Lindqvist", "Inès Dubois", "Søren Kjær", "Łukasz Nowak", "Mateo Rossi",
           "Ayşe Yılmaz", "José Álvarez", "田中 花子", "Иван Петров", "Nguyễn Văn An",
           "Priya Raman", "Kwame Osei", "Björn Åkesson", "Chloé Martin", "Dmitri Volkov"]
CITIES = ["Lyon", "Zürich", "Kraków", "São Paulo", "München", "Osaka", "Tromsø", "Málaga",
          "Seattle", "Nairobi"]


def person():
    return RNG.choice(DISPLAY)


# ---------------------------------------------------------------------------------------
# The corpus being built.

class Corpus:
    def __init__(self):
        self.files = {}
        self.ids = set()

    def add(self, file, sid, text, spans=()):
        spans = list(spans)
        assert sid not in self.ids, sid
        self.ids.add(sid)
        assert "\r" not in text, sid
        for line in text.split("\n"):
            assert not line.startswith("@@@"), sid
        for ph in PLACEHOLDERS:
            assert ph not in text, (sid, ph)
        for det, val in spans:
            assert det in DETECTORS, (sid, det)
            assert val and val == val.strip(), (sid, val)
            assert val in text, (sid, det, val)
        for val in {v for _, v in spans}:
            wanted = sum(1 for _, v in spans if v == val)
            assert text.count(val) >= wanted, (sid, val)
        self.files.setdefault(file, []).append((sid, text, spans))

    def write(self):
        for name, samples in sorted(self.files.items()):
            path = os.path.join(HERE, name + ".txt")
            out = [
                f"# Accuracy corpus for portcullis-mask: {name}.",
                "# Generated by generate.py (do not edit by hand; change the script and re-run it).",
                "# Format: see README.md in this directory.",
                "",
            ]
            for sid, text, spans in samples:
                out.append(f"@@@ sample {sid}")
                out.extend(text.split("\n"))
                if spans:
                    out.append("@@@ expect")
                    for det, val in spans:
                        if "\n" in val:
                            out.append(f"{det} <<<")
                            out.extend(val.split("\n"))
                            out.append(">>>")
                        else:
                            out.append(f"{det} {val}")
                out.append("@@@ end")
                out.append("")
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write("\n".join(out))


C = Corpus()


def positives(det, values, templates, pair_templates=(), pairs=0):
    """One sample per value, cycling through the templates; then `pairs` samples that hold
    two values each. A template returns the text, or (text, extra spans of other detectors)."""
    singles = values[: len(values) - 2 * pairs]
    rest = values[len(values) - 2 * pairs:]
    for i, v in enumerate(singles):
        name, tpl = templates[i % len(templates)]
        out = tpl(v)
        text, extra = out if isinstance(out, tuple) else (out, [])
        spans = [(det, v)] * text.count(v) + extra
        assert any(d == det for d, _ in spans), (det, name, v)
        C.add(det, f"{det}/pos/{name}-{i + 1:02d}", text, spans)
    for j in range(pairs):
        v1, v2 = rest[2 * j], rest[2 * j + 1]
        name, tpl = pair_templates[j % len(pair_templates)]
        out = tpl(v1, v2)
        text, extra = out if isinstance(out, tuple) else (out, [])
        spans = [(det, v1)] * text.count(v1) + [(det, v2)] * text.count(v2) + extra
        C.add(det, f"{det}/pos/{name}-{j + 1:02d}", text, spans)


def negatives(det, items):
    """Near misses: (slug, text) or (slug, text, spans of other detectors that are present)."""
    for i, item in enumerate(items):
        slug, text = item[0], item[1]
        spans = item[2] if len(item) > 2 else []
        assert all(d != det for d, _ in spans), (det, slug)
        C.add(det, f"{det}/neg/{slug}-{i + 1:02d}", text, spans)


# =======================================================================================
# email

def email_values(n):
    domains = ["example.com", "example.org", "example.net", "mail.example.com",
               "eu.example.org", "example.co.uk", "acme.test", "shop.acme.test",
               "corp.example", "billing.example.net", "uni-example.edu"]
    tags = ["billing", "news", "jira", "github", "2024"]
    out = []
    for i in range(n):
        f, l, d = RNG.choice(FIRST), RNG.choice(LAST), RNG.choice(domains)
        style = i % 8
        local = [f"{f}.{l}", f"{f[0]}{l}", f"{f}_{l}{RNG.randint(1, 99)}", f"{f}+{RNG.choice(tags)}",
                 f"{f}-{l}", f"{f}", f"{f}.{l}.{RNG.randint(70, 99)}", f"{l}{RNG.randint(1, 9)}"][style]
        e = f"{local}@{d}"
        if i % 11 == 5:
            e = f"{f.capitalize()}.{l.capitalize()}@{d.upper()}"
        out.append(e)
    return out


positives("email", email_values(46), [
    ("json", lambda v: json.dumps({"id": RNG.randint(1000, 9999), "name": person(), "email": v,
                                   "created_at": iso_ts()}, ensure_ascii=False)),
    ("log", lambda v: f"{iso_ts()} INFO auth: login succeeded user={v} session={uuid4()}"),
    ("prose-en", lambda v: f"Please forward the signed contract to {v} before Friday."),
    ("prose-de", lambda v: f"Bitte senden Sie die Unterlagen an {v} – vielen Dank für Ihre Geduld."),
    ("prose-ja", lambda v: f"ご不明な点は {v} までお問い合わせください。"),
    ("prose-fr", lambda v: f"Écrivez-nous à {v} ; nous répondrons sous 48 h."),
    ("csv", lambda v: f"id,name,email,signup_date\n{RNG.randint(1000, 9999)},{person()},{v},2024-03-18"),
    ("markdown-table", lambda v: f"| Owner | Contact |\n|---|---|\n| Platform team | {v} |"),
    ("mailto", lambda v: f"Questions about the rollout? [Contact support](mailto:{v}) or open a ticket."),
    ("yaml", lambda v: f"maintainers:\n  - name: {person()}\n    email: {v}\n    since: 2021"),
    ("prose-period", lambda v: f"Anything else? Ask {v}."),
    ("prose-ru", lambda v: f"Пишите на {v}, ответим в течение дня."),
    ("prose-zh", lambda v: f"联系邮箱：{v}（工作日回复）"),
    ("git-log", lambda v: f"commit {git_sha()}\nAuthor: {person()} <{v}>\nDate:   Mon May 6 10:12:44 2024 +0200\n\n    Fix retry backoff"),
    ("sql", lambda v: f"INSERT INTO customers (id, email, city) VALUES ({RNG.randint(10, 999)}, '{v}', '{RNG.choice(CITIES)}');"),
    ("xml", lambda v: f"<contact><name>{person()}</name><email>{v}</email></contact>"),
    ("prose-emoji", lambda v: f"🎉 Welcome aboard! Your login is {v} 🚀"),
], [
    ("email-header", lambda a, b: f"From: \"{person()}\" <{a}>\nTo: {b}\nSubject: Invoice {invoice_id()} overdue"),
    ("cc-list", lambda a, b: f"cc: {a}, {b}"),
    ("json-array", lambda a, b: json.dumps({"recipients": [a, b], "template": "weekly-digest"})),
], pairs=3)

negatives("email", [
    ("npm-versions", "npm install lodash@4.17.21 left-pad@1.3.0 --save-exact"),
    ("scoped-package", "Upgraded @acme/ui-kit@2.0.0-rc.3 and @types/node@20.11.5."),
    ("mention", "@alice can you review #4821 before the release? cc @bruno.tanaka"),
    ("java-annotations", "@Override\npublic String toString() { return name; }"),
    ("css-media", "@media screen and (max-width: 600px) { .nav { display: none; } }"),
    ("spelled-out", "You can reach me at alice at example dot com."),
    ("incomplete", "The form was submitted with email='user@' and name='Alice'."),
    ("docker-digest", "docker pull registry.example.com/team/api@sha256:" + rand(HEX, 64)),
    ("diff-hunk", "@@ -12,7 +12,9 @@ fn main() {"),
    ("at-price", "3 × widgets @ $4.99 each, total $14.97"),
    ("ssh-host", "ssh deploy@bastion -p 2222"),
    ("field-name", "The email field is required and must be unique."),
    ("prose-de", "Bitte geben Sie Ihre E-Mail-Adresse an (z. B. name(at)firma.de)."),
    ("handle", "Follow us: @example_dev and @acme_support"),
    ("python-decorator", "@app.route('/users/<int:user_id>', methods=['GET'])"),
    ("at-time", "Meeting @ 10:30 in room 4.12"),
    ("version-at", "Built with rustc@1.88.0 on runner@ubuntu-22.04"),
])

# =======================================================================================
# phone

US_AREAS = ["212", "312", "415", "503", "617", "646", "206", "303", "512", "404", "702", "919"]


def us_line():
    return f"01{RNG.randint(0, 99):02d}"


def phone_values():
    out = []
    for i in range(12):
        a, l = RNG.choice(US_AREAS), us_line()
        out.append([f"+1{a}555{l}", f"+1 {a} 555 {l}", f"+1-{a}-555-{l}", f"+1 ({a}) 555-{l}",
                    f"({a}) 555-{l}", f"{a}-555-{l}", f"{a}.555.{l}", f"1-{a}-555-{l}"][i % 8])
    for i in range(6):
        x = f"{RNG.randint(0, 999):03d}"
        out.append([f"+44 20 7946 0{x}", f"020 7946 0{x}", f"+44 7700 900{x}",
                    f"+447700900{x}", f"+44 (0)20 7946 0{x}", f"+44 7700 900 {x}"][i])
    extra = [
        lambda: f"+49 30 {digits(4)} {digits(4)}",
        lambda: f"+49 151 {digits(8)}",
        lambda: f"+33 6 {digits(2)} {digits(2)} {digits(2)} {digits(2)}",
        lambda: f"+33 1 {digits(2)} {digits(2)} {digits(2)} {digits(2)}",
        lambda: f"+61 491 570 {RNG.randint(110, 159)}",
        lambda: f"+81 3-{digits(4)}-{digits(4)}",
        lambda: f"+81 90-{digits(4)}-{digits(4)}",
        lambda: f"+91 98{digits(3)} {digits(5)}",
        lambda: f"+55 11 9{digits(4)}-{digits(4)}",
        lambda: f"+34 6{digits(2)} {digits(3)} {digits(3)}",
        lambda: f"+39 02 {digits(4)} {digits(4)}",
        lambda: f"+31 20 {digits(3)} {digits(4)}",
        lambda: f"+46 8 {digits(3)} {digits(3)} {digits(2)}",
        lambda: f"+48 {digits(3)} {digits(3)} {digits(3)}",
        lambda: f"+353 1 {digits(3)} {digits(4)}",
        lambda: f"+27 21 {digits(3)} {digits(4)}",
        lambda: f"+52 55 {digits(4)} {digits(4)}",
        lambda: f"+65 {digits(4)} {digits(4)}",
        lambda: f"+49301234{digits(4)}",
        lambda: f"+3361{digits(7)}",
        lambda: f"+61 2 {digits(4)} {digits(4)}",
        lambda: f"+1 {RNG.choice(US_AREAS)}-555-{us_line()}",
        lambda: f"+41 44 {digits(3)} {digits(2)} {digits(2)}",
        lambda: f"+420 {digits(3)} {digits(3)} {digits(3)}",
        lambda: f"({RNG.choice(US_AREAS)}) 555-{us_line()}",
        lambda: f"{RNG.choice(US_AREAS)}-555-{us_line()}",
        lambda: f"+82 10-{digits(4)}-{digits(4)}",
        lambda: f"+86 139 {digits(4)} {digits(4)}",
    ]
    for f in extra:
        out.append(f())
    RNG.shuffle(out)
    return out


positives("phone", phone_values(), [
    ("json", lambda v: json.dumps({"customer_id": RNG.randint(10000, 99999), "phone": v, "verified": True})),
    ("log", lambda v: f"{iso_ts()} sms.sent to={v} status=delivered id={uuid4()}"),
    ("prose-en", lambda v: f"Call me at {v} after 6 pm if the deploy is still stuck."),
    ("prose-de", lambda v: f"Rückruf bitte unter {v}, ich bin bis 17 Uhr erreichbar."),
    ("prose-ja", lambda v: f"電話番号：{v}（平日のみ）"),
    ("csv", lambda v: f"name,phone,city\n{person()},{v},{RNG.choice(CITIES)}"),
    ("markdown", lambda v: f"## Escalation\n\n- **On-call:** {v}\n- **Runbook:** see wiki"),
    ("vcard", lambda v: f"BEGIN:VCARD\nVERSION:3.0\nFN:{person()}\nTEL;TYPE=cell:{v}\nEND:VCARD"),
    ("yaml", lambda v: f"support:\n  phone: \"{v}\"\n  hours: \"09:00-17:30\""),
    ("prose-es", lambda v: f"Llámanos al {v}, de lunes a viernes."),
    ("signature", lambda v: f"--\n{person()} | Account Manager\nM: {v}"),
    ("sql", lambda v: f"UPDATE contacts SET phone = '{v}' WHERE id = {RNG.randint(100, 9999)};"),
    ("prose-fr", lambda v: f"Pour toute question, appelez le {v} (appel non surtaxé)."),
    ("ticket", lambda v: f"Ticket #{RNG.randint(10000, 99999)}: customer asked for a callback on {v} regarding order {order_id()}."),
], [
    ("two-numbers", lambda a, b: f"Office: {a} / Mobile: {b}"),
    ("html-tel", lambda a, b: f"<p>Sales <a href=\"tel:{a}\">{a}</a>, support {b}</p>"),
], pairs=2)

negatives("phone", [
    ("iso-date", "Release date 2024-05-06; code freeze on 2024-04-29."),
    ("iso-timestamp", f"started_at=2024-05-06T14:03:27.512+02:00 finished_at={iso_ts()}"),
    ("epoch-ms", f"{{\"created\": {epoch_ms()}, \"updated\": {epoch_ms()}}}"),
    ("epoch-s", "exp=1715004207 iat=1714917807 nbf=1714917807"),
    ("part-number", "Replace part no. 415-555-01234 and 8842-553-0123-A before shipping."),
    ("order-id", f"Your order {order_id()} ships with tracking 1Z999AA1{digits(10)}."),
    ("invoice-id", f"Invoice {invoice_id()} is due on 2024-06-01 (amount 1,234.56 EUR)."),
    ("uuid", f"trace_id={uuid4()} span_id={rand(HEX, 16)}"),
    ("isbn", "ISBN 978-3-16-148410-0, 3rd edition, 2019"),
    ("page-range", "See pages 1203-1245 and the appendix (1998-2004 data)."),
    ("zip-plus4", "Ship to 400 Pine St, Seattle, WA 98101-1234, USA"),
    ("coordinates", "Location: 48.8566, 2.3522 (accuracy 12 m)"),
    ("amount", "Total revenue: $1,234,567.89 (+12.5% YoY)"),
    ("time-range", "Opening hours 09:00-17:30, Sat 10:00-14:00"),
    ("build-number", "Build 20240506.1432 passed in 12m 31s"),
    ("version", "Upgrade from 10.4.1 to 10.5.0 requires a restart."),
    ("dotted-date", "Stand: 06.05.2024, gültig bis 31.12.2025"),
    ("counter", "Processed 4155550123 bytes in 12034 ms"),
    ("serial", "Serial number: SN-2024-0506-88123"),
    ("german-date-range", "Urlaub vom 12.08.2024 bis 23.08.2024 – Vertretung: Team B"),
    ("sku", "SKU 100-2000-3000 out of stock; restock ETA 2024-07-15"),
    ("math", "Compute 123 456 789 × 3 = 370 370 367"),
])

# =======================================================================================
# ssn

def ssn_value():
    while True:
        area = RNG.randint(1, 899)
        if area == 666:
            continue
        s = f"{area:03d}-{RNG.randint(1, 99):02d}-{RNG.randint(1, 9999):04d}"
        if s not in ("078-05-1120", "219-09-9999", "123-45-6789"):
            assert ssn_ok(s)
            return s


positives("ssn", [ssn_value() for _ in range(46)], [
    ("json", lambda v: json.dumps({"employee_id": f"E{digits(5)}", "name": person(), "ssn": v, "hired": "2021-09-01"}, ensure_ascii=False)),
    ("csv", lambda v: f"employee_id,last_name,ssn,state\nE{digits(5)},{RNG.choice(LAST).capitalize()},{v},WA"),
    ("prose-en", lambda v: f"The applicant's Social Security number is {v}; please verify it with the SSA."),
    ("form", lambda v: f"Employee's social security number: {v}\nEmployer identification number (EIN): 12-3456789"),
    ("log", lambda v: f"{iso_ts()} kyc.check ok applicant={uuid4()} ssn={v}"),
    ("markdown-table", lambda v: f"| Name | SSN | DOB |\n|------|-----|-----|\n| {person()} | {v} | 1984-02-29 |"),
    ("prose-de", lambda v: f"Ihre US-Sozialversicherungsnummer ({v}) wurde für die Steuererklärung übernommen."),
    ("prose-es", lambda v: f"Número de Seguro Social: {v} — verificado el 6 de mayo."),
    ("xml", lambda v: f"<employee><id>{digits(6)}</id><ssn>{v}</ssn></employee>"),
    ("hl7", lambda v: f"PID|1||MRN{digits(6)}^^^HOSP||DOE^JANE||19800101|F|||12 MAIN ST^^SPRINGFIELD^IL^62701||||||||{v}"),
    ("yaml", lambda v: f"applicant:\n  name: {person()}\n  ssn: \"{v}\"\n  income: 72000"),
    ("prose-ja", lambda v: f"米国社会保障番号 {v} を確認しました。"),
    ("chat", lambda v: f"[10:42] agent: can you confirm the last digits?\n[10:43] customer: sure, it's {v}"),
    ("sql", lambda v: f"SELECT * FROM payroll WHERE ssn = '{v}' AND year = 2023;"),
], [
    ("two-ssns", lambda a, b: f"Joint return: primary SSN {a}, spouse SSN {b}."),
], pairs=2)

bad_ssns = ["000-12-3456", "666-21-9034", "900-45-1234", "912-70-1234", "987-65-4321",
            "457-00-9034", "457-21-0000", "999-99-9999"]
for s in bad_ssns:
    assert not ssn_ok(s), s
negatives("ssn", [
    ("area-000", "SSN: 000-12-3456 (placeholder from the import job)"),
    ("area-666", "ssn=666-21-9034 rejected by validator"),
    ("area-900", "{\"ssn\": \"900-45-1234\"}"),
    ("itin", "ITIN 912-70-1234 issued for the 2023 tax year"),
    ("area-987", "Test record: SSN 987-65-4321"),
    ("group-00", "Employee SSN: 457-00-9034"),
    ("serial-0000", "social security number 457-21-0000 is invalid"),
    ("area-999", "SSN 999-99-9999 used as a sentinel value"),
    ("phone-shape", "Call 415-555-0123 for help", [("phone", "415-555-0123")]),
    ("iso-date", "Effective 2024-05-06 until 2025-05-05"),
    ("too-long-serial", "Case no. 457-21-90345 was closed."),
    ("too-long-area", "Reference 1457-21-9034 in the ledger"),
    ("zip-plus4", "Springfield, IL 62701-1234"),
    ("isbn10", "ISBN 0-306-40615-2"),
    ("ein", "Employer identification number: 12-3456789"),
    ("part-number", f"Part 457-21-9034-B (rev. C) replaces 457-21-9033-B"),
    ("ticket", "JIRA OPS-2024-0518 and OPS-2024-0519 are duplicates"),
    ("uuid", f"request {uuid4()} failed"),
    ("date-us", "Signed 05-06-2024 in Springfield"),
    ("prose", "Never send your SSN by email; use the secure upload form instead."),
])

# =======================================================================================
# credit_card

DOCUMENTED_CARDS = ["4111111111111111", "4242424242424242", "4012888888881881",
                    "5555555555554444", "5105105105105100", "2223003122003222",
                    "378282246310005", "371449635398431", "6011111111111117",
                    "6011000990139424", "3530111333300000", "3566002020360505",
                    "30569309025904", "38520000023237", "6200000000000005", "4222222222222"]


def make_card(prefix, length):
    body = prefix + digits(length - len(prefix) - 1)
    return body + luhn_check_digit(body)


def card_groups(n):
    return {13: [4, 4, 5], 14: [4, 6, 4], 15: [4, 6, 5], 16: [4, 4, 4, 4], 19: [4, 4, 4, 4, 3]}[n]


def format_card(num, sep):
    if not sep:
        return num
    out, i = [], 0
    for g in card_groups(len(num)):
        out.append(num[i:i + g])
        i += g
    return sep.join(out)


def card_values():
    gen_specs = [("4", 16)] * 8 + [(str(RNG.randint(51, 55)), 16) for _ in range(6)] + \
        [(str(RNG.randint(2221, 2720)), 16) for _ in range(3)] + [("34", 15), ("37", 15), ("37", 15)] + \
        [("6011", 16), ("65", 16), ("644", 16)] + [("36", 14), ("301", 14)] + \
        [(str(RNG.randint(3528, 3589)), 16) for _ in range(2)] + [("62", 16), ("62", 19)] + [("4", 19)]
    nums = DOCUMENTED_CARDS + [make_card(p, n) for p, n in gen_specs]
    for n in nums:
        assert card_ok(n), n
    seps = ["", " ", "-", " ", ""]
    out = []
    for i, n in enumerate(nums):
        sep = seps[i % len(seps)] if len(n) != 13 else ""
        out.append(format_card(n, sep))
    RNG.shuffle(out)
    return out


positives("credit_card", card_values(), [
    ("json", lambda v: json.dumps({"order": order_id(), "card_number": v, "exp": "09/27", "amount": 42.0})),
    ("log", lambda v: f"{iso_ts()} payment.authorized pan={v} amount=129.00 EUR merchant=M{digits(6)}"),
    ("prose-en", lambda v: f"My card number is {v}, expiring 09/27. Please charge the deposit."),
    ("prose-de", lambda v: f"Kartennummer: {v} (gültig bis 11/26), Betrag 59,90 €"),
    ("prose-ja", lambda v: f"カード番号 {v} でお支払いください。"),
    ("csv", lambda v: f"txn_id,card,amount,currency\n{uuid4()},{v},19.99,USD"),
    ("markdown", lambda v: f"Use the test card `{v}` with any CVC and a future date."),
    ("html-form", lambda v: f"<input type=\"text\" name=\"cc\" value=\"{v}\" autocomplete=\"cc-number\">"),
    ("kv", lambda v: f"card={v} cvv=*** zip=94107"),
    ("prose-fr", lambda v: f"Numéro de carte : {v} — merci de ne pas l'envoyer par e-mail."),
    ("chat", lambda v: f"customer: here is my card {v}\nagent: thanks, never share the CVC."),
    ("yaml", lambda v: f"payment:\n  method: card\n  number: \"{v}\"\n  holder: {person()}"),
    ("sql", lambda v: f"INSERT INTO payments (card_no, amount) VALUES ('{v}', 250.00);"),
    ("prose-ru", lambda v: f"Номер карты: {v}. Срок действия 12/28."),
], [])

cc_bad_luhn = []
for base in ["4111111111111111", "5555555555554444", "378282246310005", "6011111111111117"]:
    bad = base[:-1] + str((int(base[-1]) + 3) % 10)
    assert not luhn_ok(bad)
    cc_bad_luhn.append(bad)
unknown = []
for p in ["9", "8", "7", "0", "1"]:
    u = make_card(p, 16)
    assert luhn_ok(u) and card_issuer(u) is None
    unknown.append(u)
short12 = make_card("4", 12)
long20 = make_card("4", 20)
assert card_issuer(short12) is None and card_issuer(long20) is None
embedded = "9" + "4111111111111111"
assert card_issuer(embedded) is None
order_num = "4" + digits(12)
if luhn_ok(order_num):
    order_num = order_num[:-1] + str((int(order_num[-1]) + 1) % 10)
assert not card_ok(order_num)
negatives("credit_card", [
    ("luhn-fail", f"card_number={format_card(cc_bad_luhn[0], ' ')} declined (invalid number)"),
    ("luhn-fail", json.dumps({"pan": cc_bad_luhn[1]})),
    ("luhn-fail", f"Amex {format_card(cc_bad_luhn[2], ' ')} failed validation"),
    ("luhn-fail", f"Discover {cc_bad_luhn[3]} rejected"),
    ("unknown-prefix", f"Gift card {format_card(unknown[0], ' ')} balance: 25.00"),
    ("unknown-prefix", f"loyalty_id={unknown[1]}"),
    ("unknown-prefix", f"Member number {format_card(unknown[2], '-')}"),
    ("unknown-prefix", f"account {unknown[3]} closed"),
    ("unknown-prefix", f"UATP-like reference {unknown[4]}"),
    ("too-short", f"Reference {short12} (12 digits)"),
    ("too-long", f"Batch {long20} processed"),
    ("embedded", f"tracking={embedded}"),
    ("order-number", f"Order #{order_num} confirmed"),
    ("epoch-ms", f"\"ts\": {epoch_ms()}, \"seq\": {digits(9)}"),
    ("masked", "Card ending in **** **** **** 4242 was charged"),
    ("masked", "card: 4111-11XX-XXXX-1111 (tokenized)"),
    ("double-separator", "4111  1111  1111  1111 (pasted with two spaces between groups)"),
    ("tracking", "UPS 1Z 999 AA1 01 2345 6784"),
    ("uuid", f"payment_intent={uuid4()}"),
    ("invoice", f"Invoice {invoice_id()} amount 4,111.11 USD"),
    ("phone", "Card services hotline +1 800 555 0199", [("phone", "+1 800 555 0199")]),
    ("git-sha", f"fixed in {git_sha()}"),
    ("iso-timestamp", f"{iso_ts()} batch=20240506120000123"),
    ("prose", "We accept Visa, Mastercard and American Express; card numbers are never stored."),
])

# =======================================================================================
# iban

IBAN_SPECS = {
    "DE": lambda: digits(18),
    "GB": lambda: RNG.choice(["NWBK", "BARC", "MIDL", "LOYD", "HBUK"]) + digits(14),
    "FR": lambda: digits(23),
    "NL": lambda: RNG.choice(["ABNA", "INGB", "RABO", "TRIO"]) + digits(10),
    "ES": lambda: digits(20),
    "IT": lambda: RNG.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") + digits(22),
    "BE": lambda: digits(12),
    "CH": lambda: digits(17),
    "AT": lambda: digits(16),
    "PL": lambda: digits(24),
    "SE": lambda: digits(20),
    "IE": lambda: RNG.choice(["AIBK", "BOFI", "IPBS"]) + digits(14),
    "NO": lambda: digits(11),
    "PT": lambda: digits(21),
    "DK": lambda: digits(14),
    "FI": lambda: digits(14),
    "LU": lambda: digits(3) + rand(UPPER_ALNUM, 13),
}


def make_iban(country):
    bban = IBAN_SPECS[country]()
    iban = country + iban_check_digits(country, bban) + bban
    assert iban_ok(iban)
    return iban


def print_iban(iban):
    return " ".join(iban[i:i + 4] for i in range(0, len(iban), 4))


def iban_values():
    countries = list(IBAN_SPECS) * 3
    out = []
    for i, c in enumerate(countries[:46]):
        v = make_iban(c)
        out.append(print_iban(v) if i % 5 in (1, 3) else v)
    RNG.shuffle(out)
    return out


def bic():
    return RNG.choice(["COBADEFFXXX", "NWBKGB2L", "BNPAFRPP", "INGBNL2A", "DEUTDEDB110", "UBSWCHZH80A"])


positives("iban", iban_values(), [
    ("json", lambda v: json.dumps({"account_holder": person(), "iban": v, "bic": bic()}, ensure_ascii=False)),
    ("invoice-de", lambda v: f"Bitte überweisen Sie den Betrag von 1.250,00 € bis zum 15.06.2024 auf IBAN {v} (BIC {bic()})."),
    ("csv", lambda v: f"supplier,iban,currency\n{person()} GmbH,{v},EUR"),
    ("log", lambda v: f"{iso_ts()} sepa.transfer created debtor_iban={v} amount=320.00 ref={invoice_id()}"),
    ("prose-fr", lambda v: f"IBAN : {v} — merci d'indiquer la référence {invoice_id()}."),
    ("prose-nl", lambda v: f"Rekeningnummer: {v} t.n.v. Stichting Voorbeeld"),
    ("xml-pain001", lambda v: (f"<CdtrAcct><Id><IBAN>{v.replace(' ', '')}</IBAN></Id></CdtrAcct>",
                               [("iban", v.replace(" ", ""))] if " " in v else [])),
    ("markdown", lambda v: f"**Bank details**\n\n- Holder: {person()}\n- IBAN: {v}\n- BIC: {bic()}"),
    ("yaml", lambda v: f"payout:\n  iban: {v}\n  currency: EUR"),
    ("prose-es", lambda v: f"Cuenta para la devolución: {v}. Gracias."),
    ("prose-en", lambda v: f"Please update our bank account to {v} for all future payments."),
    ("email-footer", lambda v: f"Acme Example AG · Musterstraße 1 · 8000 Zürich\nIBAN {v} · MWST CHE-123.456.789"),
    ("prose-pl", lambda v: f"Numer rachunku: {v}, tytuł przelewu: {order_id()}"),
], [])

iban_good = make_iban("DE")
bad_check = iban_good[:2] + f"{(int(iban_good[2:4]) + 7) % 97:02d}" + iban_good[4:]
assert not iban_ok(bad_check)
gb = make_iban("GB")
gb_bad = gb[:2] + ("00" if gb[2:4] != "00" else "01") + gb[4:]
assert not iban_ok(gb_bad)
fr = make_iban("FR")
i = next(k for k in range(10, len(fr) - 1) if fr[k] != fr[k + 1])
fr_swapped = fr[:i] + fr[i + 1] + fr[i] + fr[i + 2:]
assert not iban_ok(fr_swapped)
nl = make_iban("NL")
nl_typo = nl[:-1] + str((int(nl[-1]) + 1) % 10)
assert not iban_ok(nl_typo)
es = make_iban("ES")
es_short = es[:-3]
assert not iban_ok(es_short)
it = make_iban("IT")
it_bad = it[:2] + f"{(int(it[2:4]) + 11) % 97:02d}" + it[4:]
assert not iban_ok(it_bad)
negatives("iban", [
    ("bad-check-digits", f"IBAN {bad_check} rejected by the bank"),
    ("bad-check-digits", f"iban={print_iban(gb_bad)}"),
    ("transposed-digits", f"Bitte prüfen: {print_iban(fr_swapped)}"),
    ("typo", json.dumps({"iban": nl_typo})),
    ("truncated", f"IBAN: {es_short}"),
    ("bad-check-digits", f"Conto: {it_bad}"),
    ("bic-only", "BIC COBADEFFXXX, Commerzbank Frankfurt"),
    ("legacy-account", "Kontonummer 0532013000, BLZ 37040044"),
    ("sort-code", "Sort code 20-00-00, account number 55779911"),
    ("vat-id", "USt-IdNr. DE123456789, Steuernummer 143/123/45678"),
    ("order-id", f"Order {order_id()} / invoice {invoice_id()}"),
    ("uuid", f"transfer_id={uuid4()}"),
    ("country-code-prose", "DE and GB subsidiaries report in EUR and GBP respectively."),
    ("license-plate", "Vehicle DE12 ABC 3456 registered in Berlin"),
    ("random-alnum", "Reference GB29XYZ1234567 (not an account)"),
    ("git-sha", f"deployed {git_sha()} to eu-central-1"),
    ("part-number", "Part DE4455-66-7788 (Bosch)"),
    ("swift-message", ":20:REF2024050601\n:32A:240506EUR1250,00"),
])

# =======================================================================================
# ipv4

def ipv4_values():
    out = []
    for _ in range(46):
        kind = RNG.randint(0, 6)
        if kind == 0:
            ip = f"10.{RNG.randint(0, 255)}.{RNG.randint(0, 255)}.{RNG.randint(1, 254)}"
        elif kind == 1:
            ip = f"192.168.{RNG.randint(0, 255)}.{RNG.randint(1, 254)}"
        elif kind == 2:
            ip = f"172.{RNG.randint(16, 31)}.{RNG.randint(0, 255)}.{RNG.randint(1, 254)}"
        elif kind == 3:
            ip = f"192.0.2.{RNG.randint(1, 254)}"
        elif kind == 4:
            ip = f"198.51.100.{RNG.randint(1, 254)}"
        elif kind == 5:
            ip = f"203.0.113.{RNG.randint(1, 254)}"
        else:
            ip = f"100.{RNG.randint(64, 127)}.{RNG.randint(0, 255)}.{RNG.randint(1, 254)}"
        out.append(ip)
    out[12] = "8.8.8.8"
    out[31] = "0.0.0.0"
    return out


positives("ipv4", ipv4_values(), [
    ("nginx-log", lambda v: f"{v} - - [06/May/2024:12:34:56 +0000] \"GET /api/v1/orders?page=2 HTTP/1.1\" 200 5123 \"-\" \"curl/8.5.0\""),
    ("json", lambda v: json.dumps({"event": "login", "client_ip": v, "ts": epoch_ms()})),
    ("sshd", lambda v: f"May  6 12:34:56 bastion sshd[2211]: Failed password for invalid user admin from {v} port {RNG.randint(1024, 65535)} ssh2"),
    ("listen", lambda v: f"server {{\n    listen {v}:8443 ssl;\n    server_name api.example.com;\n}}"),
    ("cidr", lambda v: f"allow {v}/24;\ndeny all;"),
    ("prose-en", lambda v: f"The database at {v} stopped responding at 03:12 UTC."),
    ("prose-ja", lambda v: f"サーバー {v} に接続できません。"),
    ("markdown-table", lambda v: f"| Host | Address | Role |\n|---|---|---|\n| db-1 | {v} | primary |"),
    ("csv", lambda v: f"hostname,ip,os\nweb-{RNG.randint(1, 20):02d},{v},Ubuntu 22.04.4 LTS"),
    ("hosts", lambda v: f"{v}\tdb.internal db"),
    ("url", lambda v: f"Health check: curl -s http://{v}:9100/metrics | head"),
    ("prose-de", lambda v: f"Die Firewall blockiert Verbindungen von {v}, bitte Freigabe prüfen."),
    ("iptables", lambda v: f"iptables -A INPUT -s {v} -j DROP"),
    ("yaml", lambda v: f"redis:\n  host: {v}\n  port: 6379"),
], [
    ("xff", lambda a, b: f"X-Forwarded-For: {a}, {b}"),
    ("route", lambda a, b: f"default via {a} dev eth0 src {b} metric 100"),
], pairs=3)

negatives("ipv4", [
    ("octet-256", "Invalid address 256.1.1.1 in config line 12"),
    ("octet-999", "host=999.10.10.10 could not be parsed"),
    ("octet-300", "netmask 255.255.300.0 is not valid"),
    ("five-parts", "OID-like version 1.2.3.4.5 in the manifest"),
    ("v-prefix", "Released v10.0.0.1-beta to the canary ring"),
    ("version", "Please upgrade to version 1.2.3.4 before Friday."),
    ("user-agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0.6099.109 Safari/537.36"),
    ("oid", "Extension 1.3.6.1.4.1.311.21.7 (certificate template)"),
    ("three-parts", "subnet 192.168.1 is reserved"),
    ("dotted-date", "Stand 06.05.2024"),
    ("semver", "Bumped serde to 1.0.203 and tokio to 1.37.0"),
    ("section", "See section 3.2.1 and figure 4.1"),
    ("windows-build", "OS build 10.0.19045.4291"),
    ("assembly-version", "[assembly: AssemblyVersion(\"4.0.0.0-rc\")]"),
    ("decimal", "Pi is about 3.14159 and e is about 2.71828"),
    ("uuid", f"instance {uuid4()}"),
    ("git-sha", f"HEAD is now at {git_sha()[:12]}"),
    ("coordinates", "lat=52.5200 lon=13.4050"),
    ("kernel", "Linux 5.15.0.105.102-generic"),
    ("prose", "The IP address field was left empty; DHCP will assign one."),
])

# =======================================================================================
# ipv6

def ipv6_values():
    out = []
    for i in range(46):
        kind = i % 6
        if kind in (0, 1):
            n = (0x20010DB8 << 96) | RNG.getrandbits(96)
            if i % 4 == 1:
                n &= ~((1 << 64) - 1) | 0xFFFF  # many zero groups: compresses
        elif kind == 2:
            n = (0xFE80 << 112) | RNG.getrandbits(64)
        elif kind == 3:
            n = (0xFD << 120) | (RNG.getrandbits(56) << 64) | RNG.getrandbits(16)
        elif kind == 4:
            n = (0x20010DB8 << 96) | (RNG.getrandbits(16) << 80) | RNG.getrandbits(8)
        else:
            n = (0x2A01 << 112) | (RNG.getrandbits(48) << 64) | RNG.getrandbits(64)
        a = ipaddress.IPv6Address(n)
        assert a.ipv4_mapped is None
        s = a.exploded if i % 7 == 3 else a.compressed
        if i % 9 == 4:
            s = s.upper()
        assert "." not in s
        out.append(s)
    out[3] = "::1"
    out[22] = "2001:db8::1"
    out[33] = "fe80::1"
    return out


positives("ipv6", ipv6_values(), [
    ("json", lambda v: json.dumps({"peer": v, "bytes_in": RNG.randint(100, 99999)})),
    ("url-bracket", lambda v: f"GET http://[{v}]:8080/healthz returned 503"),
    ("log", lambda v: f"{iso_ts()} WARN conn: handshake timeout remote={v} attempt=3"),
    ("prose-en", lambda v: f"The service binds to {v} on port 5432 by default."),
    ("prose-de", lambda v: f"Der Router hat die Adresse {v} zugewiesen bekommen."),
    ("csv", lambda v: f"host,address,zone\nedge-{RNG.randint(1, 9)},{v},eu-west"),
    ("markdown", lambda v: f"* Gateway: `{v}`\n* DNS: see runbook"),
    ("nginx", lambda v: f"listen [{v}]:443 ssl http2;"),
    ("prose-ja", lambda v: f"IPv6 アドレス {v} からのアクセスを拒否しました。"),
    ("yaml", lambda v: (f"bind:\n  - \"{v}\"\n  - 127.0.0.1", [("ipv4", "127.0.0.1")])),
    ("ip-route", lambda v: f"default via {v} dev eth0 proto ra metric 1024"),
    ("access-log", lambda v: f"{v} - - [06/May/2024:09:15:02 +0200] \"POST /login HTTP/2.0\" 302 0"),
], [
    ("pair", lambda a, b: f"src={a} dst={b} proto=tcp"),
], pairs=2)

negatives("ipv6", [
    ("mac", "eth0: link/ether 00:1a:2b:3c:4d:5e brd ff:ff:ff:ff:ff:ff"),
    ("time", "Job finished at 12:34:56 after 01:02:03 of runtime"),
    ("iso-timestamp", "2024-05-06T12:34:56+02:00"),
    ("rust-path", "use std::collections::HashMap; impl std::fmt::Display for Error"),
    ("cpp-scope", "std::vector<int> v; Foo::Bar::baz();"),
    ("nine-groups", "1:2:3:4:5:6:7:8:9 is not an address"),
    ("triple-colon", "addr 2001:db8:::1 rejected"),
    ("group-too-long", "invalid 12345::abcd in config"),
    ("two-double-colons", "invalid 2001::db8::1 in config"),
    ("non-hex", "2001:db8::g1 fails to parse"),
    ("ratio", "aspect 16:9, scripture John 3:16"),
    ("port", "localhost:8080 and example.com:443"),
    ("mac-dashes", "MAC 00-1A-2B-3C-4D-5E"),
    ("uuid", f"id={uuid4()}"),
    ("log-level", "2024-05-06 10:15:30.123 [main] INFO::startup complete"),
    ("ldap-dn", "ldap://ldap.example.com:389/dc=example,dc=com"),
    ("emoji-shortcode", "reacted with :thumbsup: and :tada:"),
    ("ruby", "ActiveRecord::Base.connection"),
])

# =======================================================================================
# aws_access_key, aws_secret_key

aws_ids = [("AKIA" if i % 6 else "ASIA") + rand(B32, 16) for i in range(46)]


def aws_secret():
    while True:
        s = rand(B64, 40)
        if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s):
            return s


aws_secrets = [aws_secret() for _ in range(46)]

positives("aws_access_key", aws_ids, [
    ("credentials-ini", lambda v: f"[default]\naws_access_key_id = {v}\nregion = eu-central-1"),
    ("env", lambda v: f"export AWS_ACCESS_KEY_ID={v}\nexport AWS_DEFAULT_REGION=us-east-1"),
    ("sts-json", lambda v: json.dumps({"Credentials": {"AccessKeyId": v, "Expiration": "2024-05-06T13:00:00Z"}})),
    ("cloudtrail", lambda v: json.dumps({"eventName": "GetObject", "userIdentity": {"type": "IAMUser", "accessKeyId": v}, "sourceIPAddress": "AWS Internal"})),
    ("log", lambda v: f"{iso_ts()} ERROR s3: SignatureDoesNotMatch for access key {v} (request {req_id()})"),
    ("prose-en", lambda v: f"Please rotate {v} today, it was committed to the public repo."),
    ("python", lambda v: f"s3 = boto3.client(\"s3\", aws_access_key_id=\"{v}\", region_name=\"eu-west-1\")"),
    ("terraform", lambda v: f"provider \"aws\" {{\n  region     = \"us-west-2\"\n  access_key = \"{v}\"\n}}"),
    ("markdown", lambda v: f"> **Leaked key:** `{v}` (deactivated 2024-05-06)"),
    ("prose-ja", lambda v: f"アクセスキー {v} は無効化されました。"),
    ("csv", lambda v: f"User name,Access key ID,Status\nci-deployer,{v},Active"),
    ("yaml", lambda v: f"aws:\n  access_key_id: {v}\n  region: ap-northeast-1"),
], [])

negatives("aws_access_key", [
    ("too-short", "key AKIA" + rand(B32, 12) + " looks truncated"),
    ("too-long", "AKIA" + rand(B32, 24) + " is not a key id"),
    ("lowercase", "akia" + rand("abcdefghijklmnopqrstuvwxyz234567", 16) + " (lowercased)"),
    ("embedded", "XAKIA" + rand(B32, 16) + "Z in a base32 blob"),
    ("prose", "Access key IDs start with AKIA or ASIA; never paste them in chat."),
    ("arn", "arn:aws:iam::123456789012:user/ci-deployer"),
    ("role-id", "RoleId AROA" + rand(B32, 17) + " for ci-deployer"),
    ("request-id", f"x-amz-request-id: {rand(UPPER_ALNUM, 16)}"),
    ("git-sha", f"commit {git_sha()}"),
    ("uuid", f"aws_request_id={uuid4()}"),
    ("base32", "otpauth secret JBSWY3DPEHPK3PXP" + rand(B32, 16)),
    ("account-id", "account 123456789012 in eu-central-1"),
    ("instance-id", "instance i-0a1b2c3d4e5f67890 stopped"),
    ("akia-word", "AKIA-style identifiers are logged in CloudTrail."),
    ("detection-regex", "aws-access-key: '(AKIA|ASIA)[0-9A-Z]{16}'"),
    ("masked", "aws_access_key_id = AKIA************ABCD"),
])

positives("aws_secret_key", aws_secrets, [
    ("credentials-ini", lambda v: f"[prod]\naws_secret_access_key = {v}\nregion = eu-central-1"),
    ("env", lambda v: f"AWS_SECRET_ACCESS_KEY={v}"),
    ("sts-json", lambda v: json.dumps({"Credentials": {"SecretAccessKey": v, "SessionToken": "(omitted)"}})),
    ("python", lambda v: f"session = boto3.Session(aws_secret_access_key=\"{v}\")"),
    ("yaml", lambda v: f"s3:\n  aws_secret_access_key: {v}\n  bucket: backups"),
    ("docker-env", lambda v: f"docker run -e AWS_SECRET_ACCESS_KEY={v} -e AWS_REGION=eu-west-1 backup:1.4"),
    ("json-config", lambda v: json.dumps({"aws": {"secretAccessKey": v, "region": "us-east-1"}})),
    ("ini-export", lambda v: f"export AWS_SECRET_ACCESS_KEY=\"{v}\""),
    ("github-actions", lambda v: f"env:\n  AWS_SECRET_ACCESS_KEY: {v}\n  AWS_REGION: eu-north-1"),
    ("k8s", lambda v: f"stringData:\n  aws_secret_access_key: \"{v}\""),
], [])

negatives("aws_secret_key", [
    ("git-sha", f"commit {git_sha()}\nMerge: {git_sha()[:7]} {git_sha()[:7]}"),
    ("git-sha", f"Fixed in {git_sha()} (cherry-picked from {git_sha()})"),
    ("sha1-digest", f"sha1sum: {git_sha()}  release.tar.gz"),
    ("sha256", f"sha256:{rand(HEX, 64)}"),
    ("sri", "integrity=\"sha512-" + base64.b64encode(RNG.randbytes(64)).decode() + "\""),
    ("npm-lock", json.dumps({"resolved": "https://registry.npmjs.org/left-pad/-/left-pad-1.3.0.tgz",
                             "integrity": "sha1-" + base64.b64encode(RNG.randbytes(20)).decode()})),
    ("data-uri", "<img src=\"data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + RNG.randbytes(60)).decode() + "\">"),
    ("k8s-cert", "tls.crt: " + base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB" + RNG.randbytes(40)).decode()),
    ("base64-json", "payload=" + base64.b64encode(json.dumps({"user": "alice", "role": "viewer", "exp": 1715004207}).encode()).decode()),
    ("random-40-no-context", f"Build artifact id {rand(ALNUM, 40)} uploaded"),
    ("path", "s3://backups-prod/2024/05/06/db-dump-00012-of-00040.sql.gz"),
    ("prose", "The AWS secret access key is shown only once; store it in a vault."),
    ("uuid", f"{uuid4()} {uuid4()}"),
    ("docker-digest", f"image@sha256:{rand(HEX, 64)}"),
    ("base64-text", "message=" + base64.b64encode("Hello, this is a perfectly harmless base64 string!".encode()).decode()),
])

# =======================================================================================
# github_token

def gh_token(i):
    kind = ["ghp_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"][i % 7]
    if kind == "github_pat_":
        return kind + rand(ALNUM, 22) + "_" + rand(ALNUM, 59)
    return kind + rand(ALNUM, 36)


positives("github_token", [gh_token(i) for i in range(46)], [
    ("env", lambda v: f"GITHUB_TOKEN={v}"),
    ("auth-header", lambda v: f"curl -H \"Authorization: token {v}\" https://api.github.com/user"),
    ("prose-en", lambda v: f"I accidentally pushed {v} in the last commit, revoking it now."),
    ("clone-url", lambda v: f"git clone https://x-access-token:{v}@github.com/acme/infra.git"),
    ("npmrc", lambda v: f"//npm.pkg.github.com/:_authToken={v}"),
    ("json", lambda v: json.dumps({"token": v, "expires_at": "2024-06-06T00:00:00Z"})),
    ("markdown", lambda v: f"```bash\nexport GH_TOKEN={v}\ngh auth status\n```"),
    ("bearer", lambda v: f"Authorization: Bearer {v}"),
    ("log", lambda v: f"{iso_ts()} WARN github: rate limited for credential {v} (remaining=0)"),
    ("prose-de", lambda v: f"Das Token {v} wurde im CI-Log gefunden und widerrufen."),
    ("yaml", lambda v: f"registry:\n  username: ci-bot\n  pat: {v}"),
    ("oauth-response", lambda v: f"access_token={v}&scope=repo%2Cgist&token_type=bearer"),
], [])

negatives("github_token", [
    ("too-short", "ghp_" + rand(ALNUM, 20) + " (truncated in the screenshot)"),
    ("unknown-prefix", "ghx_" + rand(ALNUM, 36)),
    ("prose", "Fine-grained tokens start with github_pat_ and classic ones with ghp_."),
    ("url", "https://github.com/acme/portcullis/pull/4821"),
    ("git-sha", f"Merge pull request #4821 from acme/fix-retry ({git_sha()})"),
    ("actions-expression", "token: ${{ secrets.GITHUB_TOKEN }}"),
    ("identifier", "const ghp_prefix_len = 4;"),
    ("run-id", "https://github.com/acme/portcullis/actions/runs/9012345678/job/24789012345"),
    ("uuid", f"delivery={uuid4()}"),
    ("detection-regex", "rules:\n  - id: github-pat\n    regex: 'ghp_[A-Za-z0-9]{36}'"),
    ("masked", "token ghp_" + "*" * 32 + "Zx9Q (masked by the CI)"),
    ("prefix-only", "Found 3 strings starting with gho_ in the dump; none were complete."),
])

# =======================================================================================
# gitlab_token

def gl_token(i):
    mid = string.ascii_letters + string.digits + "_-"
    if i % 9 == 4:
        return "glrt-" + rand(ALNUM, 1) + rand(mid, 18) + rand(ALNUM, 1)
    if i % 9 == 7:
        return "gldt-" + rand(ALNUM, 1) + rand(mid, 18) + rand(ALNUM, 1)
    return "glpat-" + rand(ALNUM, 1) + rand(mid, 18) + rand(ALNUM, 1)


positives("gitlab_token", [gl_token(i) for i in range(46)], [
    ("api-header", lambda v: f"curl --header \"PRIVATE-TOKEN: {v}\" \"https://gitlab.example.com/api/v4/projects\""),
    ("clone-url", lambda v: f"git clone https://oauth2:{v}@gitlab.example.com/platform/gateway.git"),
    ("env", lambda v: f"GITLAB_TOKEN={v}"),
    ("prose-en", lambda v: f"The pipeline log printed {v}; it has been revoked."),
    ("json", lambda v: json.dumps({"name": "ci-deploy", "scopes": ["api"], "token": v})),
    ("runner-toml", lambda v: f"[[runners]]\n  name = \"docker-eu\"\n  url = \"https://gitlab.example.com\"\n  token = \"{v}\""),
    ("markdown", lambda v: f"1. Create a token (e.g. `{v}`)\n2. Store it as a masked CI variable"),
    ("prose-fr", lambda v: f"Le jeton {v} a expiré hier soir."),
    ("log", lambda v: f"{iso_ts()} audit: personal access token used credential={v} ip=unknown"),
    ("yaml", lambda v: f"gitlab:\n  url: https://gitlab.example.com\n  access: {v}"),
], [])

negatives("gitlab_token", [
    ("too-short", "glpat-" + rand(ALNUM, 8) + " looks truncated"),
    ("prose", "Personal access tokens are prefixed with glpat- by default."),
    ("ci-variable", "variables:\n  GITLAB_TOKEN: $CI_JOB_TOKEN"),
    ("url", "https://gitlab.example.com/platform/gateway/-/merge_requests/481"),
    ("git-sha", f"pipeline #{digits(7)} for {git_sha()[:8]} passed"),
    ("registration", "Register the runner with gitlab-runner register --url https://gitlab.example.com"),
    ("uuid", f"job_id={uuid4()}"),
    ("identifier", "let glpat_regex_len = 26;"),
    ("detection-regex", "regex = 'glpat-[0-9a-zA-Z_\\-]{20}'"),
    ("masked", "The UI shows it as glpat-******************** after creation."),
    ("placeholder-doc", "Replace <your_access_token> with the value shown once in User Settings."),
])

# =======================================================================================
# slack_token

def slack_token(i):
    kind = i % 6
    if kind in (0, 1, 2):
        return f"xoxb-{digits(RNG.randint(10, 13))}-{digits(RNG.randint(10, 13))}-{rand(ALNUM, 24)}"
    if kind in (3, 4):
        return f"xoxp-{digits(11)}-{digits(11)}-{digits(13)}-{rand(HEX, 32)}"
    return f"{RNG.choice(['xoxa', 'xoxr', 'xoxs'])}-{digits(11)}-{digits(12)}-{rand(ALNUM, 24)}"


positives("slack_token", [slack_token(i) for i in range(46)], [
    ("env", lambda v: f"SLACK_BOT_TOKEN={v}"),
    ("bearer", lambda v: f"curl -H \"Authorization: Bearer {v}\" https://slack.com/api/auth.test"),
    ("json", lambda v: json.dumps({"ok": True, "app_id": "A0" + rand(UPPER_ALNUM, 9), "bot": v})),
    ("prose-en", lambda v: f"Someone pasted {v} in #general, please rotate it."),
    ("log", lambda v: f"{iso_ts()} ERROR slack: invalid_auth for {v}"),
    ("yaml", lambda v: f"notifications:\n  slack:\n    channel: \"#alerts\"\n    credential: {v}"),
    ("python", lambda v: f"client = WebClient(\"{v}\")"),
    ("prose-ja", lambda v: f"Slack のトークン {v} が漏洩しました。"),
    ("markdown", lambda v: f"| Workspace | Token |\n|---|---|\n| acme | `{v}` |"),
], [])

negatives("slack_token", [
    ("xoxo", "Thanks for everything, xoxo, Anna"),
    ("prose", "Bot tokens begin with xoxb- and user tokens with xoxp-."),
    ("webhook-path", "Channel ID C0123ABCD, user U04ABCDE12"),
    ("unknown-type", "xoxq-" + digits(11) + "-" + rand(ALNUM, 24)),
    ("too-short", "xoxb-123"),
    ("uuid", f"event_id={uuid4()}"),
    ("ts", "thread_ts=1715004207.123456"),
    ("git-sha", f"fix: slack retries ({git_sha()[:10]})"),
    ("detection-regex", "pattern: xox[baprs]-([0-9a-zA-Z]{10,48})"),
    ("masked", "Logs now print xoxb-****-****-**** instead of the token."),
    ("channel-url", "https://acme.slack.com/archives/C0123ABCD/p1715004207123456"),
])

# =======================================================================================
# stripe_key

def stripe_key(i):
    prefix = ["sk_live_", "sk_test_", "rk_live_", "sk_live_", "rk_test_", "sk_test_"][i % 6]
    n = [24, 99, 24, 34, 99, 24][i % 6]
    return prefix + rand(ALNUM, n)


positives("stripe_key", [stripe_key(i) for i in range(46)], [
    ("env", lambda v: f"STRIPE_SECRET_KEY={v}"),
    ("curl", lambda v: f"curl https://api.stripe.com/v1/charges -u {v}: -d amount=2000 -d currency=eur"),
    ("bearer", lambda v: f"Authorization: Bearer {v}"),
    ("prose-en", lambda v: f"The key {v} showed up in a support ticket attachment."),
    ("node", lambda v: f"const stripe = require('stripe')('{v}');"),
    ("json", lambda v: json.dumps({"provider": "stripe", "key": v, "webhook_url": "https://shop.example.com/hooks"})),
    ("log", lambda v: f"{iso_ts()} ERROR billing: authentication failed with {v}"),
    ("prose-de", lambda v: f"Der Schlüssel {v} muss sofort ersetzt werden."),
    ("yaml", lambda v: f"stripe:\n  mode: live\n  key: {v}"),
    ("markdown", lambda v: f"Set `{v}` in the dashboard, then restart the worker."),
], [])

negatives("stripe_key", [
    ("identifier", "disk_live_snapshotBackupVolume2024 was rotated"),
    ("identifier", "const risk_test_thresholdsForScoringV2 = load();"),
    ("prose", "Secret keys start with sk_live_ in live mode and sk_test_ in test mode."),
    ("too-short", "sk_live_123 (placeholder)"),
    ("object-id", "charge ch_3P" + rand(ALNUM, 21) + " succeeded for customer cus_" + rand(ALNUM, 14)),
    ("payment-intent", "pi_3P" + rand(ALNUM, 21) + " created"),
    ("uuid", f"idempotency_key={uuid4()}"),
    ("event-id", "evt_1P" + rand(ALNUM, 22) + " delivered"),
    ("dashboard-masked", "Secret key: sk_live_...Xy12 (created 2024-05-06)"),
    ("detection-regex", "(?:r|s)k_(?:test|live)_[0-9a-zA-Z]{24}"),
])

# =======================================================================================
# private_key

PEM_KINDS = ["RSA PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY", "OPENSSH PRIVATE KEY",
             "ENCRYPTED PRIVATE KEY", "DSA PRIVATE KEY", "PGP PRIVATE KEY BLOCK"]


def pem_body(lines):
    raw = base64.b64encode(RNG.randbytes(48 * lines)).decode()
    return [raw[i:i + 64] for i in range(0, len(raw), 64)]


def pem(kind, lines=4, sep="\n", indent=""):
    head, tail = f"-----BEGIN {kind}-----", f"-----END {kind}-----"
    body = pem_body(lines)
    if kind == "PGP PRIVATE KEY BLOCK":
        body = ["", *body, "=" + rand(ALNUM, 4)]
    parts = [head, *body, tail]
    return (sep + indent).join(parts)


pk_templates = [
    # (name, line separator inside the PEM, indent of continuation lines, text around it)
    ("pem-file", "\n", "", lambda v: v),
    ("json-escaped", "\\n", "", lambda v: (
        "{\"type\": \"service_account\", \"project_id\": \"acme-prod\", \"private_key\": \"" + v
        + "\\n\", \"client_email\": \"ci@acme-prod.example.com\"}", [("email", "ci@acme-prod.example.com")])),
    ("yaml-block", "\n", "    ", lambda v: f"tls:\n  cert_file: /etc/tls/cert.pem\n  key: |\n    {v}\n  rotate: true"),
    ("env-escaped", "\\n", "", lambda v: f"PRIVATE_KEY=\"{v}\""),
    ("markdown-fence", "\n", "", lambda v: f"Here is the key from the old server (do not reuse):\n\n```\n{v}\n```"),
    ("log-flattened", " ", "", lambda v: f"{iso_ts()} DEBUG tls: loaded key material {v} from /etc/ssl/private/server.key"),
    ("terraform", "\n", "", lambda v: f"resource \"tls_cert\" \"api\" {{\n  private_key_pem = <<EOT\n{v}\nEOT\n}}"),
    ("prose-de", "\n", "", lambda v: f"Achtung, der Schlüssel wurde versehentlich geteilt:\n{v}\nBitte sofort widerrufen."),
    ("k8s", "\n", "    ", lambda v: f"apiVersion: v1\nkind: Secret\nstringData:\n  tls.key: |\n    {v}"),
]


def add_private_keys():
    for i in range(46):
        kind = PEM_KINDS[i % len(PEM_KINDS)]
        name, sep, indent, tpl = pk_templates[i % len(pk_templates)]
        v = pem(kind, RNG.choice([3, 4, 5, 6]), sep=sep, indent=indent)
        out = tpl(v)
        text, extra = out if isinstance(out, tuple) else (out, [])
        C.add("private_key", f"private_key/pos/{name}-{i + 1:02d}", text, [("private_key", v)] + extra)
    # One realistic full-length key.
    v = pem("PRIVATE KEY", 26)
    C.add("private_key", "private_key/pos/full-length-pkcs8", v, [("private_key", v)])


add_private_keys()

negatives("private_key", [
    ("public-key", pem("PUBLIC KEY", 4)),
    ("certificate", pem("CERTIFICATE", 6)),
    ("csr", pem("CERTIFICATE REQUEST", 5)),
    ("rsa-public", pem("RSA PUBLIC KEY", 3)),
    ("ssh-public", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + rand(ALNUM, 43) + " ops@bastion"),
    ("ssh-rsa-public", "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ" + base64.b64encode(RNG.randbytes(180)).decode() + " deploy@ci"),
    ("prose", "The private key never leaves the HSM; only the public key is exported."),
    ("header-mention", "Make sure the file starts with a BEGIN PRIVATE KEY line, not BEGIN RSA PRIVATE KEY."),
    ("pgp-public", pem("PGP PUBLIC KEY BLOCK", 4)),
    ("crl", pem("X509 CRL", 3)),
    ("path", "ssl_certificate_key /etc/ssl/private/server.key;"),
    ("base64-blob", "tls.key: <redacted by kubectl>\ntls.crt: " + base64.b64encode(RNG.randbytes(90)).decode()),
])

# =======================================================================================
# jwt

def b64url(data):
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def make_jwt(i):
    alg = ["HS256", "RS256", "ES256", "HS512", "EdDSA"][i % 5]
    header = {"alg": alg, "typ": "JWT"}
    if i % 3 == 0:
        header["kid"] = rand(HEX, 16)
    iat = RNG.randint(1714000000, 1716000000)
    payload = {"sub": RNG.choice(["user_", "svc_", "agent_"]) + rand(ALNUM, 10),
               "iss": RNG.choice(["https://auth.example.com", "https://login.acme.test/oidc", "portcullis"]),
               "aud": RNG.choice(["api", "mcp-gateway", "billing"]),
               "iat": iat, "exp": iat + 3600}
    if i % 4 == 1:
        payload["groups"] = ["agents", "readers"]
    if i % 4 == 2:
        payload["name"] = person()
    sig_len = {"HS256": 32, "RS256": 256, "ES256": 64, "HS512": 64, "EdDSA": 64}[alg]
    return ".".join([b64url(json.dumps(header, separators=(",", ":")).encode()),
                     b64url(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()),
                     b64url(RNG.randbytes(sig_len))])


positives("jwt", [make_jwt(i) for i in range(46)], [
    ("bearer", lambda v: f"Authorization: Bearer {v}"),
    ("cookie", lambda v: f"Set-Cookie: session={v}; Path=/; HttpOnly; Secure; SameSite=Lax"),
    ("log", lambda v: f"{iso_ts()} WARN authn: rejected credential {v} (reason=expired)"),
    ("prose-en", lambda v: f"Decode this one and check the audience: {v}"),
    ("curl", lambda v: f"curl -H 'Authorization: Bearer {v}' https://api.example.com/v1/me"),
    ("json", lambda v: json.dumps({"jwt": v, "expires_in": 3600})),
    ("markdown", lambda v: f"Example request:\n\n```http\nGET /mcp/billing HTTP/1.1\nAuthorization: Bearer {v}\n```"),
    ("prose-ja", lambda v: f"このトークン {v} は期限切れです。"),
    ("csv", lambda v: f"client,credential,issued\nagent-7,{v},2024-05-06"),
    ("header-lower", lambda v: f"authorization: bearer {v}"),
], [])

negatives("jwt", [
    ("dockerconfig", ".dockerconfigjson: " + base64.b64encode(json.dumps({"auths": {"registry.example.com": {"auth": "Y2k6Y2k="}}}).encode()).decode()),
    ("single-segment", "state=" + b64url(json.dumps({"returnTo": "/dashboard", "nonce": rand(ALNUM, 12)}).encode())),
    ("dotted-name", "com.example.gateway.auth.JwtVerifier failed to load"),
    ("hostname", "api.eu-west-1.amazonaws.com resolved in 12 ms"),
    ("filename", "backup.2024-05-06.tar.gz uploaded"),
    ("prose", "A JWT has three base64url parts separated by dots: header.payload.signature."),
    ("base64", base64.b64encode(RNG.randbytes(48)).decode()),
    ("version", "v1.2.3-rc.1+build.5"),
    ("uuid", f"jti={uuid4()}"),
    ("two-segments", b64url(b'{"alg":"none"}') + "." + b64url(b'{"sub":"demo"}')),
    ("java-package", "org.apache.kafka.clients.consumer.KafkaConsumer"),
])

# =======================================================================================
# password

PW_CHARS = string.ascii_letters + string.digits + "!$%*-_+^~"


def password_value(i):
    style = i % 5
    if style == 0:
        return "-".join(RNG.choice(["correct", "horse", "battery", "staple", "orbit", "maple",
                                    "copper", "violet", "tundra", "pixel"]) for _ in range(4))
    if style == 1:
        return rand(ALNUM, RNG.randint(10, 16))
    if style == 2:
        return RNG.choice(ALNUM) + rand(PW_CHARS, RNG.randint(8, 14)) + RNG.choice(ALNUM)
    if style == 3:
        return RNG.choice(["Summer", "Winter", "Welcome", "Dragon", "Sunshine"]) + str(RNG.randint(2019, 2025)) + "!"
    return rand(HEX, 32)


pw_values = [password_value(i) for i in range(46)]

positives("password", pw_values, [
    ("query", lambda v: f"jdbc:mysql://db.internal:3306/app?user=app&password={v}&useSSL=true"),
    ("conn-string", lambda v: f"Server=db01;Database=Sales;User Id=sa;Password={v};Encrypt=True"),
    ("log", lambda v: f"{iso_ts()} DEBUG login attempt user=alice password={v} result=ok"),
    ("yaml", lambda v: f"database:\n  host: db.internal\n  user: app\n  password: {v}\n  pool: 10"),
    ("ini", lambda v: f"[mysql]\nuser = backup\npasswd = {v}"),
    ("cli", lambda v: f"mysqldump -u root --password={v} sales > dump.sql"),
    ("api-key", lambda v: f"GET /v1/weather?city=Lyon&api_key={v} HTTP/1.1"),
    ("secret", lambda v: f"client_id=portal-web&secret={v}&grant_type=client_credentials"),
    ("token-url", lambda v: f"https://hooks.example.com/notify?token={v}&channel=ops"),
    ("passwd-colon", lambda v: f"passwd: {v}"),
    ("prose-de", lambda v: f"Das Testkonto nutzt password={v} (bitte ändern)."),
    ("prose-ja", lambda v: f"接続設定 password={v} を使用してください。"),
    ("env-upper", lambda v: f"PASSWORD={v}"),
    ("json", lambda v: f"{{\"username\": \"svc-report\", \"password\": \"{v}\"}}"),
    ("prefixed-env", lambda v: f"DB_PASSWORD={v}"),
    ("quoted", lambda v: f"password=\"{v}\""),
    ("api-key-yaml", lambda v: f"weather:\n  api_key: {v}"),
], [])
for i, (ctx, v) in enumerate([
    ("quoted-spaces", "my dog has fleas"),
    ("quoted-spaces", "open sesame 2024"),
]):
    C.add("password", f"password/pos/{ctx}-{i + 1:02d}", f"password=\"{v}\" # temporary", [("password", v)])

negatives("password", [
    ("prose", "Reset your password by clicking the link in the email."),
    ("prose", "Use a password manager and never reuse a password."),
    ("prompt-newline", "Enter password:\nLogin failed for user alice"),
    ("prompt-end", "mysql -u root -p\nEnter password:"),
    ("empty-json", "{\"username\": \"alice\", \"password\": \"\"}"),
    ("empty-query", "login?user=bob&password=&remember=1"),
    ("field-label", "The password field is required."),
    ("suffix-key", "password_expiry_days=90"),
    ("suffix-key", "PASSWORD_MIN_LENGTH=12"),
    ("max-tokens", "{\"model\": \"gpt-4o\", \"max_tokens\": 4096, \"temperature\": 0.2}"),
    ("max-tokens-kv", "max_tokens=4096 temperature=0.7"),
    ("secretary", "Secretary: Jane Doe, Room 4.12"),
    ("tokenizer", "tokenizer: cl100k_base"),
    ("docker-stdin", "echo \"$CR_PAT\" | docker login ghcr.io -u ci --password-stdin"),
    ("prose-de", "Passwort vergessen? Wir senden Ihnen einen Link zum Zurücksetzen."),
    ("prose-ja", "パスワードを忘れた場合は管理者に連絡してください。"),
    ("passwordless", "Passwordless login is enabled for all staff accounts."),
    ("sshd", "Failed password for invalid user admin from port 22 ssh2"),
    ("prose-secret", "The secret to good sourdough is patience."),
    ("token-prose", "Each token costs $0.000002 and the limit is 128k tokens."),
    ("api-key-prose", "Set the api_key option in config.toml and restart."),
    ("password-policy", "Password must contain: 12+ characters, one digit, one symbol."),
])

# =======================================================================================
# Mixed records: several detectors in one realistic text, and the overlap rule (a value that
# matches a specific secret detector inside a password= form is expected under the specific
# detector, once).

def mixed():
    for i in range(8):
        e, p, ip = email_values(1)[0], f"+1 {RNG.choice(US_AREAS)} 555 {us_line()}", f"10.{RNG.randint(0, 255)}.{RNG.randint(0, 255)}.{RNG.randint(1, 254)}"
        text = json.dumps({"ticket": RNG.randint(10000, 99999), "requester": {"email": e, "phone": p},
                           "client_ip": ip, "opened": iso_ts(), "trace": uuid4()})
        C.add("mixed", f"mixed/pos/support-ticket-{i + 1:02d}", text, [("email", e), ("phone", p), ("ipv4", ip)])
    for i in range(6):
        ak, sk, gh, sl = aws_ids[i], aws_secrets[i], gh_token(i + 50), slack_token(i)
        pw = password_value(i + 3)
        text = (f"# .env for staging (commit {git_sha()[:7]})\nAWS_ACCESS_KEY_ID={ak}\nAWS_SECRET_ACCESS_KEY={sk}\n"
                f"DB_HOST=db.staging.internal\nDB_PASSWORD={pw}\nGITHUB_TOKEN={gh}\nSLACK_BOT_TOKEN={sl}\n")
        C.add("mixed", f"mixed/pos/dotenv-{i + 1:02d}", text.rstrip("\n"),
              [("aws_access_key", ak), ("aws_secret_key", sk), ("password", pw), ("github_token", gh), ("slack_token", sl)])
    for i in range(6):
        name = person()
        e, ssn = email_values(1)[0], ssn_value()
        card = format_card(make_card("4", 16), " ")
        iban = make_iban(RNG.choice(["DE", "FR", "NL", "GB"]))
        text = f"customer_id,name,email,ssn,card,iban\n{RNG.randint(1000, 9999)},{name},{e},{ssn},{card},{iban}"
        C.add("mixed", f"mixed/pos/customer-export-{i + 1:02d}", text,
              [("email", e), ("ssn", ssn), ("credit_card", card), ("iban", iban)])
    for i in range(4):
        ip6, ip4, jwt = ipv6_values()[i * 5 + 2], f"192.0.2.{RNG.randint(1, 254)}", make_jwt(i + 100)
        text = (f"## Incident {RNG.randint(100, 999)} — token replay\n\n* Source: `{ip6}` via proxy `{ip4}`\n"
                f"* Credential: `{jwt}`\n* Reporter: {person()}\n* Detected at {iso_ts()}")
        C.add("mixed", f"mixed/pos/incident-markdown-{i + 1:02d}", text, [("ipv6", ip6), ("ipv4", ip4), ("jwt", jwt)])
    # Overlap: specific detector wins over password for the same value.
    ov = [
        ("token-github", lambda: (lambda v: (f"token={v}", "github_token", v))(gh_token(0))),
        ("api-key-stripe", lambda: (lambda v: (f"stripe.api_key = \"{v}\"", "stripe_key", v))(stripe_key(0))),
        ("token-slack", lambda: (lambda v: (f"https://example.com/hook?token={v}", "slack_token", v))(slack_token(0))),
        ("token-jwt", lambda: (lambda v: (f"callback#state=xyz&id_token={v}", "jwt", v))(make_jwt(7))),
        ("token-gitlab", lambda: (lambda v: (f"token: {v}", "gitlab_token", v))(gl_token(0))),
        ("json-access-token-jwt", lambda: (lambda v: (json.dumps({"access_token": v, "token_type": "Bearer", "expires_in": 3600}), "jwt", v))(make_jwt(8))),
    ]
    for i, (name, f) in enumerate(ov):
        text, det, v = f()
        C.add("mixed", f"mixed/overlap/{name}-{i + 1:02d}", text, [(det, v)])


mixed()

# =======================================================================================
# General near misses: identifiers that resemble several detectors at once.

C.add("general", "general/neg/uuids", "\n".join(uuid4() for _ in range(5)))
C.add("general", "general/neg/iso-timestamps", "\n".join(iso_ts() for _ in range(4)) + "\n2024-05-06 12:34:56,789 +0200")
C.add("general", "general/neg/epoch", f"ts_ms={epoch_ms()} ts_s=1715004207 ts_us=1715004207123456 ts_ns=1715004207123456789")
C.add("general", "general/neg/versions", "serde 1.0.203, v10.0.0.1-beta, 2.0.0-rc.1+build.7, release-2024.05.06, 1.2.3.4.5")
C.add("general", "general/neg/git-shas", "\n".join(f"{git_sha()} refs/heads/{b}" for b in ["main", "release/1.4", "feature/mask"]))
C.add("general", "general/neg/short-shas", " ".join(git_sha()[:7] for _ in range(6)))
C.add("general", "general/neg/order-invoice", f"{order_id()} {order_id()} {invoice_id()} {invoice_id()} PO-4500123456 SO-2024-000987")
C.add("general", "general/neg/base64-blobs", "\n".join(base64.b64encode(RNG.randbytes(n)).decode() for n in (30, 45, 60, 120)))
C.add("general", "general/neg/hex-digests", f"md5={rand(HEX, 32)}\nsha1={git_sha()}\nsha256={rand(HEX, 64)}")
C.add("general", "general/neg/prometheus", "http_requests_total{code=\"200\",method=\"GET\"} 1027 1715004207123\nprocess_cpu_seconds_total 12.47")
C.add("general", "general/neg/k8s-events", f"{iso_ts()} Normal Pulled pod/api-7d9f8c6b5-x2k4q Successfully pulled image \"registry.example.com/api:1.14.2\" in 2.301s (2.301s including waiting)")
C.add("general", "general/neg/money-and-units", "Paid 1,250.00 EUR (≈ 1,342.75 USD) for 4 × 16 GB RAM, 3.2 GHz, 2400 W")
C.add("general", "general/neg/prose-en", "The quarterly report shows revenue grew 12% while support tickets fell to 4,821.")
C.add("general", "general/neg/prose-multilingual", "Grüße aus Zürich! 東京の天気は晴れです。 Привет из Москвы. ¡Hasta mañana! 🎉")
C.add("general", "general/neg/stack-trace", "thread 'main' panicked at src/main.rs:42:17:\ncalled `Result::unwrap()` on an `Err` value: Os { code: 2, kind: NotFound }")
C.add("general", "general/neg/json-ids", json.dumps({"id": 4821, "parent_id": 4820, "sku": "A-100-2000", "batch": 20240506, "checksum": rand(HEX, 40)}))
C.add("general", "general/neg/csv-numbers", "date,orders,revenue,refunds\n2024-05-06,4821,129834.50,1203\n2024-05-07,5012,131002.10,998")
C.add("general", "general/neg/markdown-code", "Run `cargo test -p portcullis-mask --test accuracy -- --nocapture` to see the table.")
C.add("general", "general/neg/semver-ranges", "\"dependencies\": {\"react\": \"^18.2.0\", \"lodash\": \"~4.17.21\", \"left-pad\": \">=1.3.0 <2\"}")
C.add("general", "general/neg/lorem-base64url", b64url(RNG.randbytes(32)) + " " + b64url(RNG.randbytes(16)))

C.write()

# Summary for the person running the script.
pos = {}
neg = {}
for name, samples in C.files.items():
    for sid, _, spans in samples:
        for det, _ in spans:
            pos[det] = pos.get(det, 0) + 1
        if "/neg/" in sid:
            neg[sid.split("/")[0]] = neg.get(sid.split("/")[0], 0) + 1
for det in DETECTORS:
    print(f"{det:16} positives {pos.get(det, 0):3}  near misses {neg.get(det, 0):3}")
print(f"general near misses {neg.get('general', 0)}; samples {sum(len(s) for s in C.files.values())}")
