"""What every flow shares: finishing a run, running batches, audit hooks, the task runner.

- ``finish``: one ending for every flow (results artifact, audit row, final state);
- ``batches``: submit writing tasks in parallel, or one after another on a one-writer database;
- ``audit``: the state hooks that leave an audit row for a run that failed without writing one;
- ``runners``: the task runner picked from settings when a flow run starts;
- ``repair``: the plan-approve-execute sequence the repair and maintenance flows share.

- ``rate_budgets``: broker rate budgets shared by every worker process (installed on import);
- ``alerts``: the Prefect events the automations in ``deployments/`` react to.

Not tasks (those are in ``tasks/``) and not flows: a flow file imports what it needs from here.
"""

from flows.kit.rate_budgets import install_prefect_rate_budgets

# every flow imports this kit: its tasks then count broker requests in the shared budgets
install_prefect_rate_budgets()
