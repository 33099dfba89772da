"""What the local stack reads from a template: intrinsics, Globals, routes, and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from local.model import StackModel
from local.template import TemplateError, build_model

ARN_PREFIX = "arn:aws:lambda:us-east-1:123456789012:function:"


def write_template(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def build(tmp_path: Path, text: str, **overrides: str) -> StackModel:
    return build_model(write_template(tmp_path, text), overrides)


BASE = """
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage: {Type: String, Default: dev, AllowedValues: [dev, prod]}
  Names: {Type: String, Default: "alpha,beta,gamma"}
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
  NotProd: !Not [!Condition IsProd]
  DevOrProd: !Or [!Condition IsProd, !Equals [!Ref Stage, dev]]
  Both: !And [!Condition NotProd, !Condition DevOrProd]
Globals:
  Function:
    Runtime: python3.13
    Handler: app.lambda_handler
    Timeout: 15
    MemorySize: 512
    Layers: [!Ref Shared]
    Environment:
      Variables:
        STAGE: !Ref Stage
        TABLE_NAME: !Ref Table
        LOG_LEVEL: !If [IsProd, INFO, DEBUG]
Resources:
  Shared:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: layers/shared}
  Table:
    Type: AWS::DynamoDB::Table
    Properties:
      AttributeDefinitions: [{AttributeName: PK, AttributeType: S}]
      KeySchema: [{AttributeName: PK, KeyType: HASH}]
      BillingMode: PAY_PER_REQUEST
      TimeToLiveSpecification: {AttributeName: ttl, Enabled: true}
  Bus:
    Type: AWS::Events::EventBus
    Properties: {Name: !Sub "tagih-${Stage}"}
  Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 30
      RedrivePolicy: {deadLetterTargetArn: !GetAtt DeadLetters.Arn, maxReceiveCount: 3}
  DeadLetters:
    Type: AWS::SQS::Queue
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Lambda
        Authorizers:
          Lambda:
            FunctionArn: !GetAtt Authorizer.Arn
            AuthorizerPayloadFormatVersion: "2.0"
            EnableSimpleResponses: true
            FunctionInvokeRole: !Ref AWS::NoValue
            Identity: {Headers: [Authorization]}
  Authorizer:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/authorizer
      Timeout: 5
  Orders:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/orders
      Environment:
        Variables:
          LOG_LEVEL: TRACE
          QUEUE_URL: !Ref Queue
          WHERE: !Sub
            - "${Bus.Arn}|${Name}|${AWS::Region}|${!Literal}"
            - Name: !Select [1, !Split [",", !Ref Names]]
          JOINED: !Join ["-", [a, !Ref Stage, !If [NotProd, local, !Ref AWS::NoValue]]]
          BOTH: !If [Both, "yes", "no"]
      Events:
        Get:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: GET, Path: "/orders/{order_id}"}
        List:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: get, Path: /orders}
        Hook:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: POST, Path: /hooks, Auth: {Authorizer: NONE}}
        Any:
          Type: HttpApi
          Properties: {ApiId: !Ref Api, Method: ANY, Path: "/files/{proxy+}"}
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Queue.Arn
            BatchSize: 5
            FunctionResponseTypes: [ReportBatchItemFailures]
        Hourly:
          Type: Schedule
          Properties: {Schedule: rate(1 hour)}
        Paid:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern: {detail-type: [order.paid]}
  ProdOnly:
    Type: AWS::SNS::Topic
    Condition: IsProd
Outputs:
  Url:
    Value: !Sub "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}"
"""


def test_globals_are_merged_and_the_function_wins(tmp_path: Path) -> None:
    model = build(tmp_path, BASE)
    orders = model.functions["Orders"]
    assert orders.timeout_seconds == 15
    assert orders.memory_mb == 512
    assert orders.handler == "app.lambda_handler"
    assert orders.layer_dirs == (tmp_path / "layers/shared/python",)
    assert orders.code_dir == tmp_path / "functions/orders"
    assert orders.environment["STAGE"] == "dev"
    assert orders.environment["TABLE_NAME"] == "tagih-local-Table"
    assert orders.environment["LOG_LEVEL"] == "TRACE"  # the function's own value beats Globals
    assert model.functions["Authorizer"].timeout_seconds == 5
    assert model.functions["Authorizer"].environment["LOG_LEVEL"] == "DEBUG"
    assert orders.arn == f"{ARN_PREFIX}Orders"


def test_intrinsics_resolve_sub_getatt_select_split_join_and_conditions(tmp_path: Path) -> None:
    env = build(tmp_path, BASE).functions["Orders"].environment
    assert (
        env["WHERE"] == "arn:aws:events:us-east-1:123456789012:event-bus/tagih-dev|beta|us-east-1|${Literal}"
    )
    assert env["JOINED"] == "a-dev-local"
    assert env["BOTH"] == "yes"
    assert env["QUEUE_URL"].endswith("/123456789012/tagih-local-Queue")

    prod = build(
        tmp_path,
        BASE.replace("  ProdOnly:\n    Type: AWS::SNS::Topic\n    Condition: IsProd\n", ""),
        Stage="prod",
    )
    env = prod.functions["Orders"].environment
    assert env["LOG_LEVEL"] == "TRACE"
    assert prod.functions["Authorizer"].environment["LOG_LEVEL"] == "INFO"
    assert env["JOINED"] == "a-prod"  # AWS::NoValue drops the item
    assert env["BOTH"] == "no"
    assert prod.buses == {"Bus": "tagih-prod"}


def test_a_resource_whose_condition_is_false_is_not_part_of_the_stack(tmp_path: Path) -> None:
    # ProdOnly has a type the local stack does not know, but on dev it does not exist at all.
    model = build(tmp_path, BASE)
    assert model.outputs["Url"] == "https://local.execute-api.us-east-1.amazonaws.com"


def test_routes_keep_methods_paths_and_authorizers(tmp_path: Path) -> None:
    model = build(tmp_path, BASE)
    routes = {route.route_key: route for route in model.routes}
    assert set(routes) == {"GET /orders/{order_id}", "GET /orders", "POST /hooks", "ANY /files/{proxy+}"}
    authorizer = routes["GET /orders/{order_id}"].authorizer
    assert authorizer is not None
    assert authorizer.function == "Authorizer"
    assert authorizer.identity_headers == ("Authorization",)
    assert authorizer.simple_responses is True
    assert authorizer.payload_version == "2.0"
    assert routes["POST /hooks"].authorizer is None
    assert all(route.function == "Orders" for route in routes.values())


def test_queues_mappings_rules_and_tables(tmp_path: Path) -> None:
    model = build(tmp_path, BASE)
    queue = model.queues["Queue"]
    assert json.loads(queue.attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": "arn:aws:sqs:us-east-1:123456789012:tagih-local-DeadLetters",
        "maxReceiveCount": 3,
    }
    assert queue.attributes["VisibilityTimeout"] == "30"
    (mapping,) = model.event_source_mappings
    assert (mapping.function, mapping.queue, mapping.batch_size) == ("Orders", "Queue", 5)
    assert mapping.report_batch_item_failures is True
    hourly = model.rules["OrdersHourly"]
    assert hourly.schedule == "rate(1 hour)"
    assert hourly.targets[0].kind == "lambda"
    assert hourly.targets[0].ref == "Orders"
    paid = model.rules["OrdersPaid"]
    assert paid.bus_name == "tagih-dev"
    assert paid.event_pattern == {"detail-type": ["order.paid"]}
    assert model.tables["Table"]["TableName"] == "tagih-local-Table"
    assert model.ttl_attributes == {"Table": "ttl"}


def test_state_machine_definition_gets_its_substitutions(tmp_path: Path) -> None:
    (tmp_path / "sm.asl.json").write_text(
        json.dumps({"StartAt": "Go", "States": {"Go": {"Type": "Task", "Resource": "${FnArn}", "End": True}}})
    )
    text = BASE.replace(
        "  ProdOnly:",
        "  Machine:\n"
        "    Type: AWS::Serverless::StateMachine\n"
        "    Properties:\n"
        "      DefinitionUri: sm.asl.json\n"
        "      DefinitionSubstitutions: {FnArn: !GetAtt Orders.Arn}\n"
        "      Events:\n"
        "        Daily: {Type: Schedule, Properties: {Schedule: rate(1 day)}}\n"
        "  ProdOnly:",
    )
    model = build(tmp_path, text)
    machine = model.state_machines["Machine"]
    assert machine.definition["States"]["Go"]["Resource"] == f"{ARN_PREFIX}Orders"
    assert machine.arn == "arn:aws:states:us-east-1:123456789012:stateMachine:tagih-local-Machine"
    assert model.rules["MachineDaily"].targets[0].kind == "stepfunctions"


def test_custom_resource_keeps_its_resolved_properties(tmp_path: Path) -> None:
    text = BASE.replace(
        "  ProdOnly:",
        "  Seed:\n    Type: Custom::Seed\n    Properties:\n      ServiceToken: !GetAtt Orders.Arn\n"
        "      Version: !Sub 'v-${Stage}'\n  ProdOnly:",
    )
    model = build(tmp_path, text)
    assert model.custom_resources["Seed"] == {
        "Type": "Custom::Seed",
        "ServiceToken": f"{ARN_PREFIX}Orders",
        "Version": "v-dev",
    }


def _minimal(resources: dict[str, Any]) -> str:
    return yaml.safe_dump({"Resources": resources})


def test_an_unknown_resource_type_stops_startup_naming_it(tmp_path: Path) -> None:
    text = _minimal({"Topic": {"Type": "AWS::SNS::Topic"}})
    with pytest.raises(TemplateError, match=r"Topic.*AWS::SNS::Topic"):
        build(tmp_path, text)


def test_an_unknown_intrinsic_stops_startup_naming_it(tmp_path: Path) -> None:
    text = _minimal(
        {"Bus": {"Type": "AWS::Events::EventBus", "Properties": {"Name": {"Fn::FindInMap": ["M", "a", "b"]}}}}
    )
    with pytest.raises(TemplateError, match="Fn::FindInMap"):
        build(tmp_path, text)


def test_an_unknown_function_event_type_stops_startup(tmp_path: Path) -> None:
    text = _minimal(
        {
            "Fn": {
                "Type": "AWS::Serverless::Function",
                "Properties": {"CodeUri": "f", "Handler": "app.h", "Events": {"S3": {"Type": "S3"}}},
            }
        }
    )
    with pytest.raises(TemplateError, match="S3"):
        build(tmp_path, text)


def test_parameter_values_are_checked(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="Stage"):
        build(tmp_path, BASE, Stage="staging")
    with pytest.raises(TemplateError, match="Nope"):
        build(tmp_path, BASE, Nope="x")


def test_the_real_template_is_understood(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    model = build_model(
        root / "template.yaml", {"JwksUrl": "http://127.0.0.1:1/jwks", "JwtIssuer": "i", "JwtAudience": "a"}
    )
    assert any(route.route_key == "GET /billing/plans" for route in model.routes)
    assert model.buses["BillingBus"] == "tagih-dev"
    assert "CatalogSeed" in model.custom_resources
    assert model.functions["AuthorizerFunction"].environment["JWKS_URL"] == "http://127.0.0.1:1/jwks"


def test_the_most_specific_route_wins_and_path_parameters_are_extracted(tmp_path: Path) -> None:
    from local.http_front import match_route

    routes = build(tmp_path, BASE).routes
    found = match_route(routes, "GET", "/orders/ord_1")
    assert found is not None
    assert found.route.route_key == "GET /orders/{order_id}"
    assert found.path_parameters == {"order_id": "ord_1"}
    greedy = match_route(routes, "DELETE", "/files/a/b%20c.pdf")
    assert greedy is not None
    assert greedy.route.route_key == "ANY /files/{proxy+}"
    assert greedy.path_parameters == {"proxy": "a/b c.pdf"}
    assert match_route(routes, "POST", "/orders") is None
    assert match_route(routes, "GET", "/orders/ord_1/items") is None
    assert match_route(routes, "GET", "/files") is None


def test_kms_keys_are_created_with_their_aliases_and_code_names_a_key_by_its_alias(tmp_path: Path) -> None:
    text = _minimal(
        {
            "Key": {"Type": "AWS::KMS::Key", "Properties": {"EnableKeyRotation": True}},
            "Alias": {
                "Type": "AWS::KMS::Alias",
                "Properties": {
                    "AliasName": {"Fn::Sub": "alias/${AWS::StackName}/k"},
                    "TargetKeyId": {"Ref": "Key"},
                },
            },
            "Unaliased": {"Type": "AWS::KMS::Key"},
            "Fn": {
                "Type": "AWS::Serverless::Function",
                "Properties": {
                    "CodeUri": "f",
                    "Environment": {
                        "Variables": {"KEY": {"Ref": "Alias"}, "ARN": {"Fn::GetAtt": ["Key", "Arn"]}}
                    },
                },
            },
        }
    )
    model = build(tmp_path, text)
    assert model.kms_keys == {"Key": ["alias/tagih-local/k"], "Unaliased": []}
    environment = model.functions["Fn"].environment
    assert environment["KEY"] == "alias/tagih-local/k"
    assert environment["ARN"].startswith("arn:aws:kms:us-east-1:123456789012:key/")


def test_an_alias_of_a_key_outside_the_template_stops_startup(tmp_path: Path) -> None:
    text = _minimal(
        {
            "Alias": {
                "Type": "AWS::KMS::Alias",
                "Properties": {"AliasName": "alias/x", "TargetKeyId": "1234abcd"},
            }
        }
    )
    with pytest.raises(TemplateError, match="Alias"):
        build(tmp_path, text)
