"""A run's log on the terminal (`pipelines.cli.run_log.TerminalLog`): the first line of each warning the
run's code logs, at most a few, none of Dagster's own events; counted, so the command can say how many
it held back. Through a real Dagster job on a real (temporary) instance."""

import io

import dagster as dg
import pytest

from pipelines.cli.run_log import MAX_LINES, TerminalLog

pytestmark = pytest.mark.integration


@dg.op
def noisy(context):
    for i in range(40):
        try:
            raise OSError(f"file {i} could not be read")
        except OSError:
            context.log.warning(f"usage failed on file {i}\nsecond line of {i}", exc_info=True)
    raise RuntimeError("the step gives up\nwith a long story")


@dg.job
def noisy_job():
    noisy()


def test_a_run_that_warns_forty_times_and_fails_prints_five_first_lines():
    out = io.StringIO()
    terminal = TerminalLog(stream=out)
    with dg.instance_for_test() as instance:
        result = noisy_job.with_logger_defs(terminal.logger_defs()).execute_in_process(
            instance=instance, run_config={"loggers": {"console": {}}}, raise_on_error=False)
        stored = [e for e in instance.all_logs(result.run_id) if e.level == 30]
    assert not result.success
    assert out.getvalue().splitlines() == [f"warning: usage failed on file {i}" for i in range(MAX_LINES)]
    assert (terminal.printed, terminal.more) == (MAX_LINES, 40 - MAX_LINES)
    assert f"{40 - MAX_LINES} more warning(s)" in terminal.summary(result.run_id) and result.run_id in \
        terminal.summary(result.run_id)
    assert len(stored) == 40, "the instance keeps the full log"


def test_a_quiet_run_needs_no_summary():
    terminal = TerminalLog(stream=io.StringIO())
    assert terminal.summary("run") is None


def test_held_back_keeps_what_libraries_print_off_the_terminal_and_in_a_file(tmp_path, capfd):
    import logging
    import os
    import sys

    from pipelines.cli.run_log import held_back

    handlers = list(logging.getLogger().handlers)
    with held_back(tmp_path / "logs" / "ingest.log") as terminal:
        logging.warning("Retrying failed database connection")
        print("from python", file=sys.stderr)
        os.write(2, b"WARNING:  terminating connection due to immediate shutdown command\n")  # as libpq does
        terminal.stream.write("warning: for the terminal\n")
    print("after", file=sys.stderr)
    assert capfd.readouterr().err == "warning: for the terminal\nafter\n"
    held = (tmp_path / "logs" / "ingest.log").read_text()
    for text in ("Retrying failed database connection", "from python", "immediate shutdown command"):
        assert text in held, held
    assert logging.getLogger().handlers == handlers
