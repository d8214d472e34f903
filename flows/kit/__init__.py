"""What every flow shares: finishing a run, running batches, audit hooks, the task runner.

- ``finish``: one ending for every flow (results artifact, audit row, final state);
- ``batches``: submit writing tasks in parallel, or one after another on a one-writer database;
- ``audit``: the state hooks that leave an audit row for a run that failed without writing one;
- ``runners``: the task runner picked from settings when a flow run starts;
- ``repair``: the plan-approve-execute sequence the repair and maintenance flows share.

Not tasks (those are in ``tasks/``) and not flows: a flow file imports what it needs from here.
"""
