"""Running the federation for real: POC on one host, provisioned startup kits, processes, admin sessions.

``processes`` starts NVFlare participants from their startup kits and stops them by PID; ``provision`` turns
``server/project.yml`` into kits carrying this project's site policies; ``admin`` submits, waits for and
downloads jobs through the FLARE API; ``poc`` assembles these into ``dose3d poc up|submit|status|down``.
"""
