"""The agent: evidence-backed pull requests that change params.yaml.

Nodes (one module each, registered in agent/nodes.py) read the pipeline's evidence and return outcomes
(agent/contract.py); agent/proposal.py turns the first recommendation that passes the guardrails
(agent/guardrails.py) into a pull request; agent/publish.py pushes it and opens or updates the PR.
docs/agent.md is the user guide.
"""
