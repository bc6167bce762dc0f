"""The verdict on a pip-audit JSON report: fail on a vulnerability that has a fix.

Usage: audit_verdict.py REPORT.json  (exit 1 with the reason; SPRITEQ_REQUIRE_AUDIT=1 also
fails when the advisory service could not look some dependencies up).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def verdict(report: dict[str, Any], *, require_all: bool) -> tuple[list[str], str | None]:
    """The lines to print and the failure (None when the audit passes)."""
    fixable: list[str] = []
    unfixed: list[str] = []
    skipped: list[str] = []
    for dep in report["dependencies"]:
        if "skip_reason" in dep:
            skipped.append(dep["name"])
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln["fix_versions"]) or "no fix yet"
            line = f"  {dep['name']} {dep['version']}: {vuln['id']} ({fixes})"
            (fixable if vuln["fix_versions"] else unfixed).append(line)
    audited = len(report["dependencies"]) - len(skipped)
    lines = [
        f"pip-audit: {audited} dependencies audited; {len(fixable)} fixable and "
        f"{len(unfixed)} unfixed vulnerabilities; {len(skipped)} not looked up",
        *fixable,
        *unfixed,
    ]
    if skipped:
        lines.append(f"  not looked up (no answer from the advisory service): {', '.join(skipped)}")
    if fixable:
        return lines, "a locked dependency has a known vulnerability with a fix: upgrade it"
    if skipped and require_all:
        return lines, "some dependencies could not be audited (SPRITEQ_REQUIRE_AUDIT=1)"
    return lines, None


def main() -> None:
    with open(sys.argv[1]) as file:
        report = json.load(file)
    lines, failure = verdict(report, require_all=os.environ.get("SPRITEQ_REQUIRE_AUDIT") == "1")
    print("\n".join(lines))
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
