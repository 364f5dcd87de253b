# The Debian package (debian/): dpkg-buildpackage on a copy of the tree, then lintian, which
# must report no errors. The .deb lands in $(BUILD)/deb.
#
#   make deb
#   make check-package      build it, then install, start, stop, remove and purge it in a
#                           clean Debian 12 system (tests/packaging/, under qemu)
#
# Timing on these machines: about 2.5 minutes with the Debian root cached in
# /tmp/pgwarden-pkg-cache (the package build about 50 s, the VM about 100 s), 7 more minutes
# the first time (debootstrap and the downloads). `make test` runs it when the cache is
# there (PKG_TEST=auto), always (PKG_TEST=1) or never (PKG_TEST=0), to stay within CI's
# 20 minutes on a cold machine; `make check-package` once makes the cache.

DEB_DIR := $(BUILD)/deb

.PHONY: deb check-package check-package-maybe
PKG_TEST ?= auto
PKG_CACHE ?= /tmp/pgwarden-pkg-cache
deb:
	sh scripts/make-deb.sh $(DEB_DIR)

PKG_WORK := $(BUILD)/pkgtest
check-package: deb
	PKG_CACHE=$(PKG_CACHE) sh tests/packaging/run.sh $$(ls $(DEB_DIR)/pgwarden_*.deb | head -n 1) \
		$(PKG_WORK)

check-package-maybe:
	@if [ "$(PKG_TEST)" = 1 ] || { [ "$(PKG_TEST)" = auto ] && [ -s $(PKG_CACHE)/bookworm-root.tar ]; }; then \
		$(MAKE) check-package; \
	else \
		echo "check-package: skipped (PKG_TEST=$(PKG_TEST); no cached Debian root in $(PKG_CACHE)): run 'make check-package' once, about 10 minutes"; \
	fi
