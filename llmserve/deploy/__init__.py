"""Getting the app onto a cluster: placement needs, cluster-fit check, KubeRay manifest."""
