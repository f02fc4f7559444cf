"""studies: presets, pseudo-experiment campaigns, layout scans, projections, reports and the
`muone` command line. The top layer: it may import every other package.
"""
