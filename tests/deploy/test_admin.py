"""What `dose3d poc submit --wait` shows of a running job: progress lines of the server's job log."""

from __future__ import annotations

from dose3d_fl.deploy.admin import server_progress_lines


class _LogStore:
    """Stands in for a FLARE API session's server log store: only the text matters here."""

    def __init__(self, text: str) -> None:
        self.text = text

    def get_job_logs(self, job_id: str, target: str) -> dict:
        return {"logs": {target: self.text}}


def test_progress_lines_name_the_site_and_drop_nvflare_context() -> None:
    text = (
        "2026-11-27 04:10:00,100 - FedAvg - INFO - ------ Round 0 started. ------\n"
        "2026-11-27 04:10:01,100 - Cell - INFO - unrelated\n"
        "2026-11-27 04:10:02,100 - FedAvg - INFO - [identity=dose3d, run=1, peer=hospital-c, peer_rc=OK] "
        "- Aggregated 1/3 results\n"
        "2026-11-27 04:10:03,100 - dose3d.rounds - INFO - round 1/5: 3 site(s), Dice 0.4\n"
    )
    assert server_progress_lines(_LogStore(text), "job") == [
        "Round 0 started.",
        "hospital-c: Aggregated 1/3 results",
        "round 1/5: 3 site(s), Dice 0.4",
    ]
