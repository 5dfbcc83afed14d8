# Airflow 3.3 with this provider installed from the repository (not _PIP_ADDITIONAL_REQUIREMENTS, which
# reinstalls on every container start). Used by docker-compose.yaml for every Airflow service and the emulator.
ARG AIRFLOW_VERSION=3.3.2
FROM apache/airflow:${AIRFLOW_VERSION}-python3.11
ARG AIRFLOW_VERSION
COPY --chown=airflow:root pyproject.toml README.md /opt/airflow-provider-attentive/
COPY --chown=airflow:root airflow_provider_attentive /opt/airflow-provider-attentive/airflow_provider_attentive
# Pinning apache-airflow keeps pip from up- or downgrading the image's Airflow while resolving our deps.
RUN pip install --no-cache-dir \
        "apache-airflow==${AIRFLOW_VERSION}" \
        "/opt/airflow-provider-attentive[emulator,redis]" \
        apache-airflow-providers-postgres
