"""Build scripts of the bundled model organisms (not part of the installed package).

Run from the repository root: ``python -m organism_builds.build`` (the tiny organisms) and
``python -m organism_builds.build_smollm2`` (the smollm2 deltas). They write into
``safeseek_tl/organisms/bundled/``, which the package ships.
"""
