"""The only NVFlare-facing code: client scripts, job recipes, site configuration, simulation."""
